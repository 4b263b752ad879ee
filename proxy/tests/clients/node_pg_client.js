// node-postgres through the proxy: parameterised (extended protocol) and plain (simple
// protocol) queries, a transaction, an error and a named (prepared) query. Settings come from the PG* variables.
const fs = require("fs");
const { Client } = require("pg");

async function main() {
  const client = new Client({
    application_name: "node-pg-test",
    ssl: { ca: fs.readFileSync(process.env.PGSSLROOTCERT), servername: "localhost" },
  });
  await client.connect();
  const r = await client.query("SELECT $1::int + $2::int AS sum", [40, 2]);
  if (r.rows[0].sum !== 42) throw new Error("bad sum");
  await client.query("BEGIN");
  await client.query("INSERT INTO notes (body, n) VALUES ($1, $2)", ["node", null]);
  await client.query("COMMIT");
  const plain = await client.query("SELECT count(*)::int AS c FROM notes WHERE body = 'node'");
  if (plain.rows[0].c !== 1) throw new Error("bad count");
  try {
    await client.query("SELECT $1::int", ["not a number"]);
    throw new Error("expected an error");
  } catch (e) {
    if (e.code !== "22P02") throw e;
  }
  // A named query: parsed once (Parse with a name), then Bind/Execute only.
  for (const n of [1, 2, 3]) {
    const named = await client.query({
      name: "double",
      text: "SELECT $1::int * 2 AS d",
      values: [n],
      rowMode: "array",
    });
    if (named.rows[0][0] !== n * 2) throw new Error("bad named");
  }
  await client.end();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
