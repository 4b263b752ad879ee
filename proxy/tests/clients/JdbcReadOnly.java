// pgJDBC's DatabaseMetaData in a read-only session (issue 22), run as a single source file
// (`java -cp /usr/share/java/postgresql.jar JdbcReadOnly.java`): the catalogue queries a GUI
// tool sends on connect and when it browses a schema must work, a read-only transaction
// the driver opens itself (setReadOnly + autocommit off) must work, and a write must fail
// with SQLSTATE 25006. Settings come from the PG* variables.
import java.sql.*;
import java.util.Properties;

public class JdbcReadOnly {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static int count(ResultSet rs) throws SQLException {
        int n = 0;
        try (rs) {
            while (rs.next()) n++;
        }
        return n;
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE");
        Properties p = new Properties();
        p.setProperty("user", System.getenv("PGUSER"));
        p.setProperty("password", System.getenv("PGPASSWORD"));
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", System.getenv("PGSSLROOTCERT"));
        p.setProperty("ApplicationName", "jdbc-read-only");
        // In the start-up packet (where the proxy records it) rather than a SET afterwards.
        p.setProperty("assumeMinServerVersion", "9.0");
        try (Connection c = DriverManager.getConnection(url, p)) {
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductVersion().startsWith("15"), "version");
            check(count(md.getSchemas()) >= 3, "getSchemas");
            check(count(md.getCatalogs()) == 1, "getCatalogs");
            check(count(md.getTableTypes()) > 3, "getTableTypes");
            check(count(md.getTables(null, "public", "%", new String[] {"TABLE"})) >= 4, "getTables");
            check(count(md.getColumns(null, "public", "ports", "%")) == 3, "getColumns");
            check(count(md.getPrimaryKeys(null, "public", "notes")) == 1, "getPrimaryKeys");
            count(md.getImportedKeys(null, "public", "ports"));
            count(md.getExportedKeys(null, "public", "ports"));
            check(count(md.getIndexInfo(null, "public", "notes", false, true)) >= 1, "getIndexInfo");
            check(count(md.getTypeInfo()) > 10, "getTypeInfo");
            check(count(md.getFunctions(null, "public", "%")) >= 1, "getFunctions");
            count(md.getProcedures(null, "public", "%"));
            count(md.getTablePrivileges(null, "public", "notes"));
            // The driver's own read-only transaction: BEGIN READ ONLY before the query.
            c.setReadOnly(true);
            c.setAutoCommit(false);
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*) FROM ports")) {
                check(rs.next() && rs.getLong(1) > 0, "ports");
            }
            c.commit();
            c.setAutoCommit(true);
            // A write fails with the server's read-only error; the session goes on.
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO notes (body) VALUES ('jdbc write')");
                throw new AssertionError("a write succeeded");
            } catch (SQLException e) {
                check("25006".equals(e.getSQLState()), "write refused with " + e.getSQLState() + ": " + e.getMessage());
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SHOW default_transaction_read_only")) {
                check(rs.next() && rs.getString(1).equals("on"), "still read-only");
            }
        }
        System.out.println("metadata ok");
    }
}
