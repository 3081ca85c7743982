/** The kernel module's exports: every function here is callable from JS (pointers are byte offsets). */
export { gemm, gemmScratchBytes } from "./gemm";
export {
  binary,
  geluBackward,
  geluForward,
  scale,
  siluBackward,
  siluForward,
  softcapBackward,
  softcapForward,
  sumTo,
} from "./elementwise";
export {
  layerNormBackward,
  layerNormForward,
  rmsNormBackward,
  rmsNormForward,
  softmaxBackward,
  softmaxForward,
} from "./norms";
export { attentionBackward, attentionForward, rope } from "./attention";
export { crossEntropyBackward, crossEntropyForward } from "./loss";
export { adamw } from "./optim";
