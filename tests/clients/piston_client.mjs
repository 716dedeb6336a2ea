// Runs npm's piston-client, unchanged, against the server given as argv[2]; prints what it got as JSON.
// The client picks the latest version of a language from /api/v2/runtimes, then POSTs /api/v2/execute with
// a JSON string body and no Content-Type (node-fetch sends text/plain).
import piston from "piston-client";

const client = piston({ server: process.argv[2] });
const runtimes = await client.runtimes();
const hello = await client.execute("python", "import sys\nprint(input(), sys.argv[1:])", { stdin: "hi", args: ["a"] });
const compiled = await client.execute({
  language: "c",
  files: [{ name: "main.c", content: "#include <stdio.h>\nint main(int c, char **v){printf(\"%d\\n\", c);return 2;}" }],
});
const unknown = await client.execute("swift", "print(1)");
console.log(JSON.stringify({ runtimes, hello, compiled, unknown }));
