"""asyncpg through the proxy, in its own idioms: prepare() (Parse + Describe + Flush, no
Sync) followed by a simple query on the same connection, fetch, executemany, binary COPY
in and out, a cursor in a transaction, a rolled-back transaction and a cancelled query.
Connection settings come from libpq's PG* variables (asyncpg reads them too)."""

import asyncio

import asyncpg


async def main():
    con = await asyncpg.connect(server_settings={"application_name": "asyncpg-test"})
    # Parse + Describe + Flush, then a simple Query before any Sync.
    stmt = await con.prepare("SELECT $1::int + 1")
    await con.execute("SELECT 1")
    assert await stmt.fetchval(41) == 42

    rows = await con.fetch("SELECT n FROM generate_series(1, 3) AS n WHERE n > $1", 1)
    assert [r["n"] for r in rows] == [2, 3]

    await con.executemany(
        "INSERT INTO notes (body, n) VALUES ($1, $2)", [("asyncpg", i) for i in range(3)]
    )

    # Binary COPY in: Parse + Describe + Flush of the column query, then COPY as a Query.
    copied = await con.copy_records_to_table(
        "notes", records=[("copied-a", 10), ("copied-a", 11)], columns=["body", "n"]
    )
    assert copied == "COPY 2", copied

    # Binary COPY out.
    out = []

    async def sink(chunk):
        out.append(chunk)

    await con.copy_from_query(
        "SELECT n FROM notes WHERE body = $1 ORDER BY n", "copied-a", output=sink,
        format="binary",
    )
    assert b"".join(out), "COPY TO STDOUT sent nothing"

    # A cursor fetched in batches inside a transaction.
    async with con.transaction():
        cur = await con.cursor("SELECT n FROM notes WHERE body = $1 ORDER BY n", "asyncpg")
        assert [r["n"] for r in await cur.fetch(2)] == [0, 1]
        assert [r["n"] for r in await cur.fetch(2)] == [2]

    # A transaction rolled back by an error.
    try:
        async with con.transaction():
            await con.execute("INSERT INTO notes (body, n) VALUES ('rolled-back', 1)")
            await con.execute("SELECT 1 / 0")
        raise SystemExit("expected an error")
    except asyncpg.DivisionByZeroError:
        pass
    assert await con.fetchval("SELECT count(*) FROM notes WHERE body = 'rolled-back'") == 0

    # Cancel: the timeout makes asyncpg send a CancelRequest; the connection goes on.
    try:
        await con.execute("SELECT pg_sleep(30)", timeout=0.5)
        raise SystemExit("expected a timeout")
    except asyncio.TimeoutError:
        pass
    assert await con.fetchval("SELECT 7") == 7
    await con.close()
    print("ok")


asyncio.run(main())
