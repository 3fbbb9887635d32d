// Builds dist/ from src/ and static/: one bundled, minified script and the static files.
// Deterministic (no timestamps, no absolute paths), so CI can rebuild and compare.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  legalComments: "none",
  charset: "utf8",
  outfile: "dist/app.js",
  logLevel: "warning",
});
for (const f of ["index.html", "app.css"]) copyFileSync(`static/${f}`, `dist/${f}`);
