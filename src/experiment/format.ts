/** What the experiment reports share: number formats and the charts' Vega-Lite schema and style. */

export const f4 = (x: number) => x.toFixed(4);
export const fmt = (n: number) => n.toLocaleString("en-US");
/** Bytes as MiB with one decimal (KiB below one MiB). */
export const mib = (b: number) =>
  b >= 1024 * 1024 ? `${(b / 1024 / 1024).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`;
export const SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json";
export const CONFIG = { font: "DejaVu Sans, Helvetica, Arial, sans-serif", background: "white" };
