# Ruby pg (Debian ruby-pg) through the proxy: exec (simple Query, two statements in one
# string), exec_params (unnamed extended), prepare/exec_prepared (a named statement), a
# transaction block committed and one rolled back by an error, COPY in and out with
# copy_data, and libpq's pipeline mode. Settings come from libpq's PG* variables.
require "pg"

conn = PG.connect(application_name: "ruby-pg-test")
raise "exec" unless conn.exec("SELECT 1 AS a; SELECT 2 AS b").getvalue(0, 0) == "2"
raise "exec_params" unless conn.exec_params("SELECT $1::int + $2::int", [40, 2]).getvalue(0, 0) == "42"

conn.prepare("ins", "INSERT INTO notes (body, n) VALUES ($1, $2)")
3.times { |i| conn.exec_prepared("ins", ["ruby", i]) }

conn.transaction do |c|
  c.exec_params("INSERT INTO notes (body, n) VALUES ($1, $2)", ["ruby-tx", 1])
end
begin
  conn.transaction do |c|
    c.exec_params("INSERT INTO notes (body, n) VALUES ($1, $2)", ["ruby-tx", 2])
    c.exec("SELECT * FROM missing_table")
  end
  raise "expected an error"
rescue PG::UndefinedTable
end
raise "tx" unless conn.exec("SELECT count(*) FROM notes WHERE body = 'ruby-tx'").getvalue(0, 0) == "1"

conn.copy_data("COPY notes (body, n) FROM STDIN") do
  4.times { |i| conn.put_copy_data("ruby-copied\t#{i}\n") }
end
out = +""
conn.copy_data("COPY (SELECT n FROM notes WHERE body = 'ruby-copied' ORDER BY n) TO STDOUT") do
  while (row = conn.get_copy_data)
    out << row
  end
end
raise "copy out #{out.inspect}" unless out == "0\n1\n2\n3\n"

# Pipeline mode: two queries and a Sync sent before reading anything.
conn.enter_pipeline_mode
conn.send_query_params("SELECT $1::int * 10", [4])
conn.send_query_params("SELECT count(*) FROM notes WHERE body = $1", ["ruby"])
conn.pipeline_sync
first = conn.get_result
raise "pipeline 1" unless first.getvalue(0, 0) == "40"
conn.get_result # the end of the first query's results
second = conn.get_result
raise "pipeline 2" unless second.getvalue(0, 0) == "3"
conn.get_result
raise "sync" unless conn.get_result.result_status == PG::PGRES_PIPELINE_SYNC
conn.exit_pipeline_mode
conn.close
puts "ok"
