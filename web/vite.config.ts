/**
 * The page's build: web/ is the root, web/dist the output. COOP/COEP make the page cross-origin
 * isolated (SharedArrayBuffer, for a threaded backend), on the dev server and on `vite preview`.
 */
import { defineConfig } from "vite";

const headers = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

export default defineConfig({
  root: import.meta.dirname,
  base: "./",
  // the library's sources sit in ../src and the demo's files in ../assets
  server: { host: "127.0.0.1", headers, fs: { allow: [".."] } },
  preview: { host: "127.0.0.1", headers },
  worker: { format: "es" },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", assetsInlineLimit: 0 },
});
