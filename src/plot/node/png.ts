/** Node: an SVG rasterised to PNG by resvg (a native addon, so it stays out of the browser core). */
import { Resvg } from "@resvg/resvg-js";

/** The SVG as PNG bytes at `scale` times its size, text set in the system's fonts. */
export function svgToPng(svg: string, scale = 2): Uint8Array {
  const image = new Resvg(svg, {
    fitTo: { mode: "zoom", value: scale },
    font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" },
  }).render();
  return image.asPng();
}
