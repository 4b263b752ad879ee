// postgres.js (npm `postgres`) through the proxy, in its own idioms on one connection:
// many queries in flight at once (each Parse/Bind/Execute/Sync pipelined behind the
// others, named statements prepared once), sql.unsafe() (parameters and a simple
// multi-statement string), a committed and a rolled-back transaction with a savepoint, a
// cursor (Execute with a row limit), COPY FROM STDIN, and an error. Settings come from the
// PG* variables.
const fs = require("fs");
const postgres = require("postgres").default; // 4.x is an ES module

async function main() {
  const sql = postgres({
    max: 1,
    ssl: { ca: fs.readFileSync(process.env.PGSSLROOTCERT), servername: "localhost" },
    connection: { application_name: "postgresjs-test" },
    onnotice: () => {},
  });

  // Heavy pipelining: 40 queries in flight on the one connection, two statement shapes.
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      i % 2 ? sql`SELECT ${i}::int * 2 AS v` : sql`SELECT ${i}::int + 1 AS v`
    )
  );
  results.forEach((r, i) => {
    if (r[0].v !== (i % 2 ? i * 2 : i + 1)) throw new Error(`pipelined ${i}: ${r[0].v}`);
  });

  // unsafe(): parameters, then a simple multi-statement string.
  const u = await sql.unsafe("SELECT $1::text || '!' AS s", ["unsafe"]);
  if (u[0].s !== "unsafe!") throw new Error("unsafe");
  const multi = await sql.unsafe("SELECT 1 AS a; SELECT 'two' AS b").simple();
  if (multi[1][0].b !== "two") throw new Error("multi");

  // A transaction with a savepoint rolled back inside it.
  await sql.begin(async (tx) => {
    await tx`INSERT INTO notes ${tx({ body: "postgresjs", n: 1 }, "body", "n")}`;
    await tx.savepoint(async (sp) => {
      await sp`INSERT INTO notes (body, n) VALUES ('postgresjs', 2)`;
      throw new Error("undo the savepoint");
    }).catch((e) => {
      if (e.message !== "undo the savepoint") throw e;
    });
    await tx`INSERT INTO notes (body, n) VALUES (${"postgresjs"}, ${3})`;
  });
  // A transaction rolled back by an error.
  await sql
    .begin(async (tx) => {
      await tx`INSERT INTO notes (body, n) VALUES ('postgresjs-rolled-back', 1)`;
      await tx`SELECT 1 / ${0}::int`;
    })
    .then(
      () => { throw new Error("expected an error"); },
      (e) => { if (e.code !== "22012") throw e; }
    );

  // The same prepared statement, many times (postgres.js prepares by default).
  for (let i = 0; i < 5; i++) {
    const [r] = await sql`SELECT count(*)::int AS c FROM notes WHERE body = ${"postgresjs"}`;
    if (r.c !== 2) throw new Error(`count ${r.c}`);
  }

  // COPY FROM STDIN through a writable stream.
  const copy = await sql`COPY notes (body, n) FROM STDIN`.writable();
  await new Promise((resolve, reject) => {
    copy.on("error", reject);
    copy.on("finish", resolve);
    for (let i = 0; i < 4; i++) copy.write(`postgresjs-copied\t${i}\n`);
    copy.end();
  });

  // A cursor: Execute with a row limit, two rows at a time.
  const seen = [];
  await sql.begin(async (tx) => {
    for await (const rows of tx`SELECT n FROM notes WHERE body = 'postgresjs-copied' ORDER BY n`.cursor(2)) {
      seen.push(rows.map((r) => r.n));
    }
  });
  if (JSON.stringify(seen) !== "[[0,1],[2,3]]") throw new Error(`cursor ${JSON.stringify(seen)}`);

  // An error outside a transaction; the connection goes on.
  await sql`SELECT * FROM missing_table`.then(
    () => { throw new Error("expected an error"); },
    (e) => { if (e.code !== "42P01") throw e; }
  );
  const [last] = await sql`SELECT ${7}::int AS v`;
  if (last.v !== 7) throw new Error("last");
  await sql.end();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
