/** A Vega-Lite spec rendered to SVG by Vega (browser-safe; loaded only when a chart is drawn). */
import { parse, View } from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export async function chartSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
