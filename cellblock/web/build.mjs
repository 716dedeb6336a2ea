// Build the UI into dist/: index.html plus assets/ (ES modules split per language, one CSS file).
//
// Language grammars are loaded with import() when a language is picked, so esbuild splits each into its own
// chunk and the first page load fetches only the editor core. Every asset is local: nothing comes from a CDN.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { readFileSync, statSync } from "node:fs";

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
await copyFile("src/index.html", `${out}/index.html`);
await copyFile("src/theme.js", `${out}/assets/theme.js`);

// Sizes: everything built, and what the first page load fetches (app.js, its static imports, the CSS).
const outputs = metafile.outputs;
const firstLoad = new Set();
const visit = (file) => {
  if (firstLoad.has(file)) return;
  firstLoad.add(file);
  for (const imp of outputs[file].imports) if (imp.kind === "import-statement") visit(imp.path);
};
visit(`${out}/assets/app.js`);
firstLoad.add(`${out}/assets/style.css`);
const size = (files) => [...files].reduce((n, f) => n + statSync(f).size, 0);
const gzip = (files) => [...files].reduce((n, f) => n + gzipSync(readFileSync(f)).length, 0);
const kib = (n) => `${(n / 1024).toFixed(0)} KiB`;
const all = Object.keys(outputs).filter((f) => !f.endsWith(".map"));
console.log(
  `web: built ${out}/: first page load ${kib(size(firstLoad))} (${kib(gzip(firstLoad))} gzipped) in ` +
    `${firstLoad.size} files; all assets ${kib(size(all))} in ${all.length} files`,
);
