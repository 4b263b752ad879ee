"""psycopg 3 through the proxy: server-side parameters, pipeline mode, executemany, COPY,
a server-side cursor and an error. Connection settings come from libpq's PG* variables."""

import psycopg

with psycopg.connect(application_name="psycopg-test") as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT %s::int * 2, %s::text", (21, "zwölf"))
        assert cur.fetchone() == (42, "zwölf")

        cur.executemany("INSERT INTO notes (body, n) VALUES (%s, %s)", [("many", i) for i in range(3)])

        with conn.pipeline():
            cur.execute("INSERT INTO notes (body, n) VALUES (%s, %s)", ("piped", 10))
            cur.execute("SELECT count(*) FROM notes WHERE body = %s", ("many",))
        assert cur.fetchone() == (3,)

        with cur.copy("COPY notes (body, n) FROM STDIN") as copy:
            for i in range(5):
                copy.write_row(("copied", i))
        conn.commit()

        try:
            cur.execute("SELECT * FROM missing_table WHERE x = %s", (1,))
            raise SystemExit("expected an error")
        except psycopg.errors.UndefinedTable:
            conn.rollback()

    with conn.cursor(name="big") as named:
        named.itersize = 2
        named.execute("SELECT n FROM notes WHERE body = 'copied' ORDER BY n")
        assert [r[0] for r in named] == [0, 1, 2, 3, 4]
print("ok")
