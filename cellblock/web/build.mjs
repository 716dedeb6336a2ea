// Build the UI into dist/: index.html plus assets/ (ES modules split per language, one CSS file).
//
// Language grammars are loaded with import() when a language is picked, so esbuild splits each into its own
// chunk and the first page load fetches only the editor core. Every asset is local: nothing comes from a CDN.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { readFileSync, statSync, writeFileSync } from "node:fs";

const out = "dist";
await rm(out, { recursive: true, force: true });
await mkdir(`${out}/assets`, { recursive: true });
const { metafile } = await build({
  metafile: true,
  entryPoints: { app: "src/main.js", style: "src/style.css" },
  bundle: true,
  splitting: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  outdir: `${out}/assets`,
  chunkNames: "chunk-[hash]",
  logLevel: "warning",
});
await copyFile("src/theme.js", `${out}/assets/theme.js`);

// What the first page load fetches: app.js, the chunks it imports statically, the CSS.
const outputs = metafile.outputs;
const firstLoad = new Set();
const visit = (file) => {
  if (firstLoad.has(file)) return;
  firstLoad.add(file);
  for (const imp of outputs[file].imports) if (imp.kind === "import-statement") visit(imp.path);
};
visit(`${out}/assets/app.js`);
firstLoad.add(`${out}/assets/style.css`);

// index.html names app.js's static chunks up front (modulepreload), so the browser fetches them in parallel with
// app.js instead of discovering them one round trip later.
const preload = [...firstLoad]
  .filter((f) => f.endsWith(".js") && !f.endsWith("/app.js"))
  .map((f) => `<link rel="modulepreload" href="assets/${f.split("/").pop()}">`)
  .join("\n    ");
const page = readFileSync("src/index.html", "utf8");
if (!page.includes("<!-- modulepreload -->")) throw new Error("src/index.html lacks its <!-- modulepreload --> marker");
writeFileSync(`${out}/index.html`, page.replace("<!-- modulepreload -->", preload));

// Sizes: everything built, and the first page load.
const size = (files) => [...files].reduce((n, f) => n + statSync(f).size, 0);
const gzip = (files) => [...files].reduce((n, f) => n + gzipSync(readFileSync(f)).length, 0);
const kib = (n) => `${(n / 1024).toFixed(0)} KiB`;
const all = Object.keys(outputs).filter((f) => !f.endsWith(".map"));
console.log(
  `web: built ${out}/: first page load ${kib(size(firstLoad))} (${kib(gzip(firstLoad))} gzipped) in ` +
    `${firstLoad.size} files; all assets ${kib(size(all))} in ${all.length} files`,
);
