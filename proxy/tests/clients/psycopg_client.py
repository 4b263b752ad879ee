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

# Client-side binding (ClientCursor: values merged into the text, a simple Query), forced
# server-side prepares (prepare=True: a named statement parsed once), automatic prepares
# after prepare_threshold executions, and a pipeline with several statements, a sync and an
# error that makes the server skip the rest of it.
with psycopg.connect(application_name="psycopg-more", autocommit=True) as conn:
    conn.prepare_threshold = 2
    with psycopg.ClientCursor(conn) as cur:
        cur.execute("SELECT %s::int + 1, %s::text", (1, "o'clock"))
        assert cur.fetchone() == (2, "o'clock")
    for i in range(3):
        row = conn.execute(
            "SELECT n FROM notes WHERE body = %s AND n = %s", ("copied", i), prepare=True
        ).fetchone()
        assert row == (i,), row
    for i in range(3):
        assert conn.execute("SELECT %s::int * 3", (i,)).fetchone() == (i * 3,)
    with conn.pipeline() as p:
        conn.execute("INSERT INTO notes (body, n) VALUES (%s, %s)", ("piped2", 1))
        conn.execute("INSERT INTO notes (body, n) VALUES (%s, %s)", ("piped2", 2))
        p.sync()
        cur = conn.execute("SELECT count(*) FROM notes WHERE body = %s", ("piped2",))
    assert cur.fetchone() == (2,)
    try:
        with conn.pipeline():
            conn.execute("INSERT INTO notes (body, n) VALUES (%s, %s)", ("piped3", 1))
            conn.execute("SELECT 1 / %s::int", (0,))
            conn.execute("INSERT INTO notes (body, n) VALUES (%s, %s)", ("piped3", 2))
        raise SystemExit("expected an error")
    except psycopg.errors.DivisionByZero:
        pass
    # One implicit transaction up to the Sync: the error took the first INSERT with it.
    assert conn.execute("SELECT count(*) FROM notes WHERE body = 'piped3'").fetchone() == (0,)
print("ok more")
