/** The native backend: the shared conformance tests against ref (skipped, saying why, when the addon is absent). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Backend } from "../../src/kernels/backend.js";
import { nativeAddon, nativeStatus } from "../../src/kernels/native/node/addon.js";
import { createNativeBackend } from "../../src/kernels/native/node/backend.js";
import { conformance } from "./conformance.js";

const addon = nativeAddon();
let native: Backend | undefined;
const get = () => {
  native ??= createNativeBackend(addon!);
  return native;
};
const skip = !addon && `native addon unavailable: ${nativeStatus()}`;

for (const threads of [1, 2]) {
  describe(`native, ${threads} thread(s)`, { skip }, () => {
    it("sets its thread count", () => {
      addon!.setThreads(threads);
      assert.equal(addon!.info().threads, threads);
    });
    conformance(`native (${threads} threads)`, get, skip);
  });
}
