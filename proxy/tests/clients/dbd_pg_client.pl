# Perl DBD::Pg (Debian libdbd-pg-perl) through the proxy: do(), prepare/execute with `?`,
# `$1` and `:name` placeholders, server-side prepares (a named statement once
# pg_switch_prepared executions are reached) and client-side ones (pg_server_prepare => 0),
# begin_work/commit and a rollback after an error, COPY with pg_putcopydata, and an error
# outside a transaction. Settings come from libpq's PG* variables.
use strict;
use warnings;
use DBI;

my $dbh = DBI->connect("dbi:Pg:application_name=dbd-pg-test", undef, undef,
    { RaiseError => 1, PrintError => 0, AutoCommit => 1 });

$dbh->do("SET search_path TO public");
my ($sum) = $dbh->selectrow_array("SELECT ?::int + ?::int", undef, 40, 2);
die "sum $sum" unless $sum == 42;

# The same statement handle executed four times: unnamed at first, then a named
# server-side statement (pg_switch_prepared, 2 by default).
my $ins = $dbh->prepare("INSERT INTO notes (body, n) VALUES (?, ?)");
$ins->execute("perl", $_) for 1 .. 4;

my $named = $dbh->prepare("SELECT count(*) FROM notes WHERE body = :body AND n > :min");
$named->bind_param(":body", "perl");
$named->bind_param(":min", 1);
$named->execute;
die "named" unless ($named->fetchrow_array)[0] == 3;

# Client-side prepare: the values are put in the text, sent as a simple Query.
my $client = $dbh->prepare("SELECT \$1::text || '!'", { pg_server_prepare => 0 });
$client->execute("it's");
die "client side" unless ($client->fetchrow_array)[0] eq "it's!";

$dbh->begin_work;
$dbh->do("INSERT INTO notes (body, n) VALUES (?, ?)", undef, "perl-tx", 1);
$dbh->commit;
$dbh->begin_work;
$dbh->do("INSERT INTO notes (body, n) VALUES (?, ?)", undef, "perl-tx", 2);
eval { $dbh->do("SELECT 1 / (n - n) FROM notes WHERE body = 'perl-tx'"); 1 } and die "expected an error";
die "sqlstate " . $dbh->state unless $dbh->state eq "22012";
$dbh->rollback;
my ($tx) = $dbh->selectrow_array("SELECT count(*) FROM notes WHERE body = 'perl-tx'");
die "tx $tx" unless $tx == 1;

$dbh->do("COPY notes (body, n) FROM STDIN");
$dbh->pg_putcopydata("perl-copied\t$_\n") for 0 .. 2;
$dbh->pg_putcopyend;

eval { $dbh->selectrow_array("SELECT * FROM missing_table WHERE n = ?", undef, 1); 1 } and die "expected an error";
my ($copied) = $dbh->selectrow_array("SELECT count(*) FROM notes WHERE body = ?", undef, "perl-copied");
die "copied $copied" unless $copied == 3;
$dbh->disconnect;
print "ok\n";
