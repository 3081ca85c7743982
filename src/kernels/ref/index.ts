/** The reference backend: plain TypeScript loops. It is the oracle every faster backend is tested against. */
import type { Backend } from "../backend.js";
import { attentionBackward, attentionForward, rope } from "./attention.js";
import {
  binary,
  embeddingBackward,
  embeddingForward,
  geluBackward,
  geluForward,
  scale,
  siluBackward,
  siluForward,
  slice,
  sliceBackward,
  softcapBackward,
  softcapForward,
  sumTo,
} from "./elementwise.js";
import { crossEntropyBackward, crossEntropyForward } from "./loss.js";
import { matmul } from "./matmul.js";
import {
  layerNormBackward,
  layerNormForward,
  rmsNormBackward,
  rmsNormForward,
  softmaxBackward,
  softmaxForward,
} from "./norms.js";
import { adamw } from "./optim.js";

export const refBackend: Backend = {
  name: "ref",
  matmul,
  binary,
  sumTo,
  scale,
  slice,
  sliceBackward,
  embeddingForward,
  embeddingBackward,
  layerNormForward,
  layerNormBackward,
  rmsNormForward,
  rmsNormBackward,
  geluForward,
  geluBackward,
  siluForward,
  siluBackward,
  softcapForward,
  softcapBackward,
  softmaxForward,
  softmaxBackward,
  rope,
  attentionForward,
  attentionBackward,
  crossEntropyForward,
  crossEntropyBackward,
  adamw,
};
