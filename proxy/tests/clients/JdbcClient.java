// pgJDBC (Debian libpostgresql-jdbc-java) through the proxy, run as a single source file
// (`java -cp /usr/share/java/postgresql.jar JdbcClient.java`): a PreparedStatement that
// crosses prepareThreshold (unnamed, then a named server-side statement), a batch (several
// Parse/Bind/Execute before one Sync), DatabaseMetaData calls, a transaction with
// autocommit off committed and one rolled back after an error, and COPY with CopyManager.
// Settings come from the PG* variables.
import java.io.StringReader;
import java.sql.*;
import java.util.Properties;
import org.postgresql.PGConnection;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE");
        Properties p = new Properties();
        p.setProperty("user", System.getenv("PGUSER"));
        p.setProperty("password", System.getenv("PGPASSWORD"));
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", System.getenv("PGSSLROOTCERT"));
        p.setProperty("ApplicationName", "jdbc-test");
        p.setProperty("prepareThreshold", "3");
        // In the start-up packet (where the proxy records it) rather than a SET afterwards.
        p.setProperty("assumeMinServerVersion", "9.0");
        try (Connection c = DriverManager.getConnection(url, p)) {
            // prepareThreshold=3: unnamed twice, then the named statement S_n.
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2")) {
                for (int i = 0; i < 5; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        check(rs.getInt(1) == i * 2, "double");
                    }
                }
            }
            // A batch: three executions, one Sync.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO notes (body, n) VALUES (?, ?)")) {
                for (int i = 0; i < 3; i++) {
                    ps.setString(1, "jdbc");
                    ps.setInt(2, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 3, "batch");
            }
            // DatabaseMetaData: catalogue queries the driver writes itself.
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getTables(null, "public", "notes", new String[] {"TABLE"})) {
                check(rs.next(), "getTables");
            }
            try (ResultSet rs = md.getColumns(null, "public", "notes", "%")) {
                int n = 0;
                while (rs.next()) n++;
                check(n == 4, "getColumns " + n);
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "notes")) {
                check(rs.next() && rs.getString("COLUMN_NAME").equals("id"), "getPrimaryKeys");
            }
            // Transactions: BEGIN goes out in the same pipeline as the first statement.
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO notes (body, n) VALUES ('jdbc-tx', 1)");
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO notes (body, n) VALUES ('jdbc-tx', 2)");
                s.executeQuery("SELECT * FROM missing_table");
                throw new AssertionError("expected an error");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), e.getSQLState());
                c.rollback();
            }
            c.setAutoCommit(true);
            long copied = ((PGConnection) c).getCopyAPI()
                    .copyIn("COPY notes (body, n) FROM STDIN", new StringReader("jdbc-copied\t1\njdbc-copied\t2\n"));
            check(copied == 2, "copy");
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT count(*) FROM notes WHERE body LIKE 'jdbc%'")) {
                rs.next();
                check(rs.getLong(1) == 6, "count " + rs.getLong(1));
            }
        }
        System.out.println("ok");
    }
}
