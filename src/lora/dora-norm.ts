/**
 * DoRA's weight norm: the norm of each row of W = W0 + s·B·A (W0 [out, in], A [r, in], B [out, r]),
 * over the input dimension, without forming W:
 *   ‖W_i‖² = ‖W0_i‖² + 2s·B_i·(A·W0_iᵀ) + s²·B_i·(A·Aᵀ)·B_iᵀ.
 * ‖W0_i‖² comes from `rowSquares` (W0 is frozen, so callers cache it); A·W0ᵀ [r, out] is one product
 * of the cost of r tokens through the layer, A·Aᵀ [r, r] and B·(A·Aᵀ) [out, r] are small. The three
 * terms are summed in f64. Where they cancel (‖W_i‖² below 1/100 of ‖W0_i‖² + s²‖(B·A)_i‖², so that
 * f32 products would lose two digits), that row is formed and summed directly, in f64.
 */
import { matmul } from "../autograd/ops.js";
import { noGrad } from "../autograd/tape.js";
import { halfToFloat32 } from "../tensor/dtype.js";
import type { Tensor } from "../tensor/tensor.js";

/** Row i of a [out, in] weight as f32 (a 16-bit weight decoded, one row only). */
function weightRow(w: Tensor, i: number): Float32Array {
  const n = w.shape[1]!;
  if (!w.half) return w.data.subarray(i * n, (i + 1) * n);
  return halfToFloat32({ dtype: w.half.dtype, bits: w.half.bits.subarray(i * n, (i + 1) * n) });
}

/** ‖W0_i‖² for each row of a [out, in] weight (f32 or 16-bit), in f64. */
export function rowSquares(w: Tensor): Float64Array {
  const out = new Float64Array(w.shape[0]!);
  for (let i = 0; i < out.length; i++) {
    const row = weightRow(w, i);
    let s = 0;
    for (let k = 0; k < row.length; k++) s += row[k]! * row[k]!;
    out[i] = s;
  }
  return out;
}

/**
 * ‖W0_i + s·(B·A)_i‖ for every output row i: [out]. `w0Squares` is rowSquares(W0). W0 may be a frozen
 * 16-bit weight (its product with A then follows matmul's rule for such weights: bf16 rounds A).
 */
export function doraWeightNorm(
  W0: Tensor,
  w0Squares: Float64Array,
  A: Tensor,
  B: Tensor,
  s: number,
): Float32Array {
  const [out, inF] = W0.shape as [number, number];
  const r = A.shape[0]!;
  return noGrad(() => {
    const P = matmul(A, W0, { transB: true }).data; // [r, out]: P[j, i] = A_j · W0_i
    const G = matmul(A, A, { transB: true }); // [r, r]
    const BG = matmul(B, G).data; // [out, r]
    const b = B.data;
    const a = A.data;
    const norms = new Float32Array(out);
    for (let i = 0; i < out; i++) {
      let cross = 0;
      let quad = 0;
      for (let j = 0; j < r; j++) {
        cross += b[i * r + j]! * P[j * out + i]!;
        quad += BG[i * r + j]! * b[i * r + j]!;
      }
      let sq = w0Squares[i]! + 2 * s * cross + s * s * quad;
      if (!(sq >= 0.01 * (w0Squares[i]! + s * s * quad))) {
        // the terms cancel: sum the row itself
        const row = weightRow(W0, i);
        sq = 0;
        for (let k = 0; k < inF; k++) {
          let d = 0;
          for (let j = 0; j < r; j++) d += b[i * r + j]! * a[j * inF + k]!;
          const v = row[k]! + s * d;
          sq += v * v;
        }
      }
      norms[i] = Math.sqrt(sq);
    }
    return norms;
  });
}
