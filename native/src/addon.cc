// N-API glue: each export unpacks typed arrays (pointers into the JS heap: no copies) and numbers, and
// calls the kernel. Argument order follows src/kernels/backend.ts; null is allowed where it allows null.
#include <node_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.h"
#include "ops.h"
#include "pool.h"

namespace lora {
namespace {

struct Args {
  napi_env env;
  napi_value v[20];
  size_t n = 20;
  Args(napi_env e, napi_callback_info info) : env(e) { napi_get_cb_info(e, info, &n, v, nullptr, nullptr); }

  // a typed array's data (nullptr for null/undefined); throws unless its element type is one of `want`
  void* ptr(size_t i, std::initializer_list<napi_typedarray_type> want, size_t* len = nullptr) {
    napi_valuetype t;
    napi_typeof(env, v[i], &t);
    if (t == napi_null || t == napi_undefined) {
      if (len) *len = 0;
      return nullptr;
    }
    napi_typedarray_type type;
    size_t length;
    void* data;
    napi_value buf;
    size_t off;
    bool ok = napi_get_typedarray_info(env, v[i], &type, &length, &data, &buf, &off) == napi_ok;
    bool match = false;
    for (auto w : want) match = match || (ok && type == w);
    if (!match) throw std::invalid_argument("lora_native: argument " + std::to_string(i) + " has the wrong array type");
    if (len) *len = length;
    return data;
  }
  float* f(size_t i) { return (float*)ptr(i, {napi_float32_array}); }
  const double* f64(size_t i, size_t* n) { return (const double*)ptr(i, {napi_float64_array}, n); }
  const int32_t* ids(size_t i) { return (const int32_t*)ptr(i, {napi_int32_array}); }
  // a weight: f32, or the bits of a 16-bit one
  const void* w(size_t i) { return ptr(i, {napi_float32_array, napi_uint16_array}); }
  size_t len(size_t i) {
    size_t n = 0;
    ptr(i, {napi_float32_array, napi_int32_array, napi_uint16_array, napi_float64_array}, &n);
    return n;
  }
  double d(size_t i) {
    double x = 0;
    napi_get_value_double(env, v[i], &x);
    return x;
  }
  long l(size_t i) { return (long)d(i); }
  bool b(size_t i) {
    bool x = false;
    napi_get_value_bool(env, v[i], &x);
    return x;
  }
};

// Each export: its body runs inside try/catch, so a bad argument or a failed allocation becomes a JS error
// and no kernel runs on it.
#define FN(name)                                                   \
  void name##_body(napi_env env, napi_callback_info info);         \
  napi_value name(napi_env env, napi_callback_info info) {         \
    try {                                                          \
      name##_body(env, info);                                      \
    } catch (const std::exception& e) {                            \
      napi_throw_error(env, nullptr, e.what());                    \
    }                                                              \
    return nullptr;                                                \
  }                                                                \
  void name##_body(napi_env env, napi_callback_info info)

// ids must index rows of a table of `rows` rows (negative allowed when `ignore`: ignored targets)
void check_ids(const int32_t* ids, size_t n, long rows, bool ignore, const char* what) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] >= rows || (ids[i] < 0 && !ignore))
      throw std::range_error(std::string("lora_native: ") + what + " " + std::to_string(ids[i]) +
                             " is outside [0, " + std::to_string(rows) + ")");
}

// matmul(out, a, b, btype, batch, M, N, K, transA, transB, strideA, strideB, strideOut, accumulate,
// rowInvariant)
FN(Matmul) {
  Args a(env, info);
  GemmArgs g;
  g.C = a.f(0);
  g.A = a.f(1);
  g.B = a.w(2);
  g.btype = (int)a.l(3);
  g.batch = (int)a.l(4);
  g.M = (int)a.l(5);
  g.N = (int)a.l(6);
  g.K = (int)a.l(7);
  bool tA = a.b(8), tB = a.b(9);
  g.strideA = a.l(10);
  g.strideB = a.l(11);
  g.strideC = a.l(12);
  g.accumulate = a.b(13);
  g.invariant = a.b(14);
  g.rsA = tA ? 1 : g.K;
  g.csA = tA ? g.M : 1;
  g.rsB = tB ? 1 : g.N;
  g.csB = tB ? g.K : 1;
  g.ldc = g.N;
  gemm(g);
}

// dims: Float64Array [shape..., aStrides..., bStrides...]
void unpack_dims(Args& a, size_t i, int parts, int* nd, std::vector<long>& out) {
  size_t n = a.len(i);
  const double* p = (const double*)a.ptr(i, {napi_float64_array});
  *nd = (int)(n / parts);
  out.assign(p, p + n);
}

FN(Binary) {
  Args a(env, info);
  int nd;
  std::vector<long> dims;
  unpack_dims(a, 4, 3, &nd, dims);
  binary(a.b(0), a.f(1), a.f(2), a.f(3), nd, dims.data(), dims.data() + nd, dims.data() + 2 * nd);
}

FN(SumTo) {
  Args a(env, info);
  int nd;
  std::vector<long> dims;
  unpack_dims(a, 2, 2, &nd, dims);
  sum_to(a.f(0), (long)a.len(0), a.f(1), nd, dims.data(), dims.data() + nd);
}

FN(Scale) {
  Args a(env, info);
  scale(a.f(0), a.f(1), (long)a.len(1), (float)a.d(2));
}

FN(Slice) {
  Args a(env, info);
  slice(a.f(0), a.f(1), a.l(2), a.l(3), a.l(4), a.l(5));
}

FN(SliceBackward) {
  Args a(env, info);
  slice_backward(a.f(0), a.f(1), a.l(2), a.l(3), a.l(4), a.l(5));
}

// embeddingForward(out, weight, btype, ids, C)
FN(EmbeddingForward) {
  Args a(env, info);
  long C = a.l(4);
  if (C <= 0) return;
  check_ids(a.ids(3), a.len(3), (long)(a.len(1) / C), false, "embedding id");
  embedding_forward(a.f(0), a.w(1), (int)a.l(2), a.ids(3), (long)a.len(3), C);
}

FN(EmbeddingBackward) {
  Args a(env, info);
  if (a.l(3) <= 0) return;
  check_ids(a.ids(2), a.len(2), (long)(a.len(0) / a.l(3)), false, "embedding id");
  embedding_backward(a.f(0), a.f(1), a.ids(2), (long)a.len(2), a.l(3));
}

FN(LayerNormForward) {
  Args a(env, info);
  layernorm_forward(a.f(0), a.f(1), a.f(2), a.f(3), a.f(4), a.f(5), a.l(6), a.l(7), (float)a.d(8));
}

FN(LayerNormBackward) {
  Args a(env, info);
  layernorm_backward(a.f(0), a.f(1), a.f(2), a.f(3), a.f(4), a.f(5), a.f(6), a.f(7), a.l(8), a.l(9));
}

FN(RmsNormForward) {
  Args a(env, info);
  rmsnorm_forward(a.f(0), a.f(1), a.f(2), a.f(3), a.l(4), a.l(5), (float)a.d(6));
}

FN(RmsNormBackward) {
  Args a(env, info);
  rmsnorm_backward(a.f(0), a.f(1), a.f(2), a.f(3), a.f(4), a.f(5), a.l(6), a.l(7));
}

#define UNARY(Name, fn)                 \
  FN(Name) {                            \
    Args a(env, info);                  \
    fn(a.f(0), a.f(1), (long)a.len(1)); \
  }
#define UNARY_BWD(Name, fn)                     \
  FN(Name) {                                    \
    Args a(env, info);                          \
    fn(a.f(0), a.f(1), a.f(2), (long)a.len(2)); \
  }
UNARY(GeluForward, gelu_forward)
UNARY_BWD(GeluBackward, gelu_backward)
UNARY(SiluForward, silu_forward)
UNARY_BWD(SiluBackward, silu_backward)

FN(SoftcapForward) {
  Args a(env, info);
  softcap_forward(a.f(0), a.f(1), (long)a.len(1), (float)a.d(2));
}
FN(SoftcapBackward) {
  Args a(env, info);
  softcap_backward(a.f(0), a.f(1), a.f(2), (long)a.len(2), (float)a.d(3));
}

FN(SoftmaxForward) {
  Args a(env, info);
  softmax_forward(a.f(0), a.f(1), a.l(2), a.l(3));
}

FN(SoftmaxBackward) {
  Args a(env, info);
  softmax_backward(a.f(0), a.f(1), a.f(2), a.l(3), a.l(4));
}

FN(Rope) {
  Args a(env, info);
  size_t nf = 0;
  const double* freqs = a.f64(7, &nf);
  if ((long)nf * 2 > a.l(5)) throw std::invalid_argument("lora_native: rope has more than D/2 frequencies");
  rope(a.f(0), a.f(1), a.l(2), a.l(3), a.l(4), a.l(5), a.l(6), freqs, (long)nf * 2, a.d(8), a.b(9));
}

// ropeRows(out, x, B, H, D, offsets: Int32Array [B], freqs: Float64Array, scale): x, out [B, H, D]
FN(RopeRows) {
  Args a(env, info);
  const long B = a.l(2), H = a.l(3), D = a.l(4);
  size_t nf = 0;
  const double* freqs = a.f64(6, &nf);
  if ((long)nf * 2 > D) throw std::invalid_argument("lora_native: ropeRows has more than D/2 frequencies");
  if (a.len(0) < (size_t)(B * H * D) || a.len(1) < (size_t)(B * H * D) || a.len(5) < (size_t)B)
    throw std::invalid_argument("lora_native: ropeRows: out, x or offsets is shorter than B rows");
  rope_rows(a.f(0), a.f(1), B, H, D, a.ids(5), freqs, (long)nf * 2, a.d(7));
}

AttnDims attn_dims(Args& a, size_t i) {
  return {a.l(i),     a.l(i + 1), a.l(i + 2), a.l(i + 3), a.l(i + 4),
          a.l(i + 5), a.b(i + 6), a.d(i + 7), a.l(i + 8), a.d(i + 9)};
}

FN(AttentionForward) {
  Args a(env, info);
  attention_forward(a.f(0), a.f(1), a.f(2), a.f(3), a.f(4), attn_dims(a, 5));
}

// attentionRowsForward(out, q, k, v, keys, values, at, B, Hq, Hkv, D, causal, scale, window, softcap): a
// batched decode over caches in one pool (attention.cc attention_rows_forward). Every row's cache and the
// position it writes are checked to lie inside the pool.
FN(AttentionRowsForward) {
  Args a(env, info);
  const long B = a.l(7), Hq = a.l(8), Hkv = a.l(9), D = a.l(10);
  size_t no = 0, nq = 0, nk = 0, nv = 0, nkeys = 0, nvalues = 0, nat = 0;
  float* out = (float*)a.ptr(0, {napi_float32_array}, &no);
  const float* q = (const float*)a.ptr(1, {napi_float32_array}, &nq);
  const float* k = (const float*)a.ptr(2, {napi_float32_array}, &nk);
  const float* v = (const float*)a.ptr(3, {napi_float32_array}, &nv);
  float* keys = (float*)a.ptr(4, {napi_float32_array}, &nkeys);
  float* values = (float*)a.ptr(5, {napi_float32_array}, &nvalues);
  const int32_t* at = (const int32_t*)a.ptr(6, {napi_int32_array}, &nat);
  // sizes first (each factor at most 2^31, so the products fit a long), then the arrays against them
  const long big = 2147483647L;
  if (B < 0 || B > big || Hq <= 0 || Hq > big || Hkv <= 0 || Hkv > big || D <= 0 || D > big || Hq % Hkv != 0 ||
      Hq * D > big || no != (size_t)(B * Hq * D) || nq != no || nk != (size_t)(B * Hkv * D) || nv != nk ||
      nkeys != nvalues || nkeys % (size_t)(Hkv * D) != 0 || nat < (size_t)(2 * B))
    throw std::invalid_argument("lora_native: attentionRowsForward: inconsistent sizes");
  const long P = (long)(nkeys / (size_t)(Hkv * D));
  for (long b = 0; b < B; b++)
    if (at[2 * b] < 0 || at[2 * b + 1] < 0 || (long)at[2 * b] + at[2 * b + 1] + 1 > P)
      throw std::range_error("lora_native: attentionRowsForward: a row's cache lies outside the pool");
  AttnDims d{1, 1, 0, Hq, Hkv, D, a.b(11), a.d(12), a.l(13), a.d(14)};
  attention_rows_forward(out, q, k, v, keys, values, at, B, d);
}

// One adapter's weights on one layer as lora_rows reads them (its rows aside), made once by loraWeights and
// passed to every loraRows call with rows on that adapter. Rows change whenever a sequence joins or
// leaves the batch; the weights do not, and a plan of weights and rows remade per change (napi
// references, an external, its finalizer) cost 12 us a layer against the term's 1 us (stories260K, 16 rows,
// a Xeon), paid on most steps of a busy server.
struct LoraWeights {
  RowGroup w;  // rows and m unset
  long inF, outF;
  int32_t id;  // its slot in the env's table
};

// Every live handle of one JS thread (env) by number, its `id`: loraRows and linearRows take their groups'
// ids in an Int32Array and look each up here. Reading each handle from a JS array instead (napi_get_element,
// its type tag, napi_unwrap) took 0.4 us a group in a decode step, as long as the group's products
// (stories260K, 16 rows, a Xeon). A slot is emptied when its handle is collected, and may be reused: an id
// names a live handle of this env or none, so a stale or made-up id is refused or gives another adapter's
// weights, never freed memory (the sizes are checked either way).
struct WeightsTable {
  std::vector<LoraWeights*> slots;
  std::vector<int32_t> free;
};

WeightsTable& weights_table(napi_env env) {
  void* data = nullptr;
  if (napi_get_instance_data(env, &data) == napi_ok && data) return *(WeightsTable*)data;
  // never freed (a few bytes per JS thread): so the handles' finalizers, which may run at env teardown
  // in any order with the env's own, always find it
  auto* t = new WeightsTable();
  if (napi_set_instance_data(env, t, nullptr, nullptr) != napi_ok) {
    delete t;
    throw std::runtime_error("lora_native: could not keep the LoRA weights table");
  }
  return *t;
}

void free_weights(napi_env env, void* data, void*) {
  auto* h = (LoraWeights*)data;
  WeightsTable& table = weights_table(env);
  table.slots[(size_t)h->id] = nullptr;
  table.free.push_back(h->id);
  delete h;
}

// loraWeights(holder: {A: Float32Array [r, inF], B: Float32Array [outF, r], panels: Float32Array | null}, r,
// scaling, inF, outF): makes `holder` the handle loraRows takes (frozen, its `id` set, the weights' pointers
// wrapped in it). The holder keeps the arrays alive as its own properties, JS edges the collector sees,
// so a handle cached by its A array (a WeakMap) goes when the adapter does; napi references to the arrays
// would have kept them, and the handle, forever. `panels`, packLoraB's packing of B (r <= smallK), saves
// packing B on every call.
napi_value LoraWeightsNew(napi_env env, napi_callback_info info) {
  try {
    Args a(env, info);
    napi_value holder = a.v[0];
    const long r = a.l(1), inF = a.l(3), outF = a.l(4);
    auto array = [&](const char* name, size_t* n) -> const float* {
      napi_value v;
      napi_valuetype t;
      if (napi_get_named_property(env, holder, name, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok)
        throw std::invalid_argument("lora_native: loraWeights: the holder must be an object with A, B and panels");
      if (t == napi_null || t == napi_undefined) return *n = 0, nullptr;
      napi_typedarray_type type;
      void* data;
      napi_value buf;
      size_t off;
      if (napi_get_typedarray_info(env, v, &type, n, &data, &buf, &off) != napi_ok || type != napi_float32_array)
        throw std::invalid_argument("lora_native: loraWeights: A, B and panels must be Float32Arrays");
      return (const float*)data;
    };
    auto h = std::make_unique<LoraWeights>();
    h->inF = inF, h->outF = outF;
    size_t na = 0, nb = 0, np = 0;
    RowGroup& q = h->w;
    q.A = array("A", &na);
    q.B = array("B", &nb);
    q.panels = array("panels", &np);
    q.r = r, q.scaling = a.d(2), q.rows = nullptr, q.m = 0;
    if (inF <= 0 || outF <= 0 || r < 1 || !q.A || !q.B || (long)na != r * inF || (long)nb != outF * r)
      throw std::invalid_argument("lora_native: loraWeights: A and B must be Float32Arrays [r, in] and [out, r]");
    if (q.panels && (r > DOTS_SMALL_K || (long)np != small_k_panel((int)outF, (int)r)))
      throw std::invalid_argument("lora_native: loraWeights: panels are not packLoraB's packing of B");
    WeightsTable& table = weights_table(env);
    if (table.free.empty()) {
      if (table.slots.size() >= 2147483647u) throw std::runtime_error("lora_native: loraWeights: too many handles");
      table.free.push_back((int32_t)table.slots.size());
      table.slots.push_back(nullptr);
    }
    h->id = table.free.back();
    napi_value id;
    // frozen, so no property can be pointed elsewhere while the pointers above are in use
    if (napi_create_int32(env, h->id, &id) != napi_ok || napi_set_named_property(env, holder, "id", id) != napi_ok ||
        napi_object_freeze(env, holder) != napi_ok || napi_wrap(env, holder, h.get(), free_weights, nullptr, nullptr) != napi_ok)
      throw std::runtime_error("lora_native: loraWeights: could not make the handle (a holder used twice?)");
    table.free.pop_back();
    const size_t slot = (size_t)h->id;
    table.slots[slot] = h.release();  // the holder owns it now: free_weights runs when it is collected
    return holder;
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
    return nullptr;
  }
}

// The G groups of a loraRows or linearRows call, in two Int32Arrays at arguments `at` and at + 1 (G at
// at + 2): the ids of G loraWeights handles (at least G entries; the rest unread), then [G counts][rows]:
// group g is the handle with id ids[g] on the next counts[g] rows. Two arrays, since a batch plan's rows
// are the same in every layer of a step and its weights are each layer's own: the caller keeps the rows'
// array per plan and writes the ids per call. Checked against the layer's sizes and the N rows of the batch.
std::vector<RowGroup>& read_groups(napi_env env, Args& a, size_t at, long inF, long outF, long N, const char* fn) {
  auto fail = [&](const char* what) { throw std::invalid_argument(std::string("lora_native: ") + fn + ": " + what); };
  size_t ni = 0, n = 0;
  const int32_t* ids = (const int32_t*)a.ptr(at, {napi_int32_array}, &ni);
  const int32_t* idx = (const int32_t*)a.ptr(at + 1, {napi_int32_array}, &n);
  const long G = a.l(at + 2);
  if (G < 0 || (size_t)G > ni) fail("the ids hold fewer than G ids");
  if ((size_t)G > n) fail("the rows hold fewer than G counts");
  const int32_t *counts = idx, *rows = idx + G;
  const size_t nr = n - (size_t)G;
  const WeightsTable& table = weights_table(env);
  thread_local std::vector<RowGroup> groups;
  groups.resize((size_t)G);
  size_t used = 0;
  for (long g = 0; g < G; g++) {
    const LoraWeights* h = ids[g] >= 0 && (size_t)ids[g] < table.slots.size() ? table.slots[(size_t)ids[g]] : nullptr;
    if (!h) fail("an id is not a live loraWeights handle's");
    if (h->inF != inF || h->outF != outF) fail("a weights handle was made for other layer sizes");
    if (counts[g] < 0 || used + (size_t)counts[g] > nr) fail("the counts exceed the rows");
    groups[(size_t)g] = h->w;
    groups[(size_t)g].rows = rows + used, groups[(size_t)g].m = counts[g];
    used += (size_t)counts[g];
  }
  for (size_t i = 0; i < used; i++)
    if (rows[i] < 0 || rows[i] >= N)
      throw std::range_error(std::string("lora_native: ") + fn + ": a row is outside the batch");
  return groups;
}

// loraRows(y, x, inF, outF, ids: Int32Array, rows: Int32Array, G, chunk): G groups (read_groups); y
// accumulates each group's term on its rows (lora_rows.cc)
FN(LoraRows) {
  Args a(env, info);
  size_t ny = 0, nx = 0;
  float* y = (float*)a.ptr(0, {napi_float32_array}, &ny);
  const float* x = (const float*)a.ptr(1, {napi_float32_array}, &nx);
  const long inF = a.l(2), outF = a.l(3);
  const long N = inF > 0 ? (long)nx / inF : 0;
  if (inF <= 0 || outF <= 0 || (long)nx != N * inF || (long)ny != N * outF)
    throw std::invalid_argument("lora_native: loraRows: inconsistent sizes");
  std::vector<RowGroup>& groups = read_groups(env, a, 4, inF, outF, N, "loraRows");
  lora_rows(y, x, inF, outF, groups.data(), (long)groups.size(), std::max(1L, a.l(7)));
}

// linearRows(y, x, W bits, btype, M, N, K, chunk, ids, rows, G): a batched decode's adapted layer
// in one call: y [M, N] = x [M, K] @ W^T as the matmul export runs it batch-invariant (chunks of at most
// `chunk` rows), then loraRows' term of each group on its rows: the bits of the two calls, without the
// second call (at decode sizes its fixed cost was most of the term's time); lora_rows.cc linear_rows
FN(LinearRows) {
  Args a(env, info);
  size_t ny = 0, nx = 0, nw = 0;
  float* y = (float*)a.ptr(0, {napi_float32_array}, &ny);
  const float* x = (const float*)a.ptr(1, {napi_float32_array}, &nx);
  const int btype = (int)a.l(3);
  const void* W = btype == B_F32 ? (const void*)a.ptr(2, {napi_float32_array}, &nw)
                                 : (const void*)a.ptr(2, {napi_uint16_array}, &nw);
  const long M = a.l(4), N = a.l(5), K = a.l(6), chunk = std::max(1L, a.l(7));
  if (M < 0 || N <= 0 || K <= 0 || (long)nx != M * K || (long)ny != M * N || (long)nw != N * K ||
      (btype != B_F32 && btype != B_BF16 && btype != B_F16) || M * K > 2147483647L || M * N > 2147483647L)
    throw std::invalid_argument("lora_native: linearRows: inconsistent sizes");
  std::vector<RowGroup>& groups = read_groups(env, a, 8, K, N, M, "linearRows");
  linear_rows(y, x, W, btype, M, N, K, groups.data(), (long)groups.size(), chunk);
}

// packLoraB(panels, B, outF, r): a LoRA B [outF, r] (r <= smallK) in the small-k panels loraRows reads
FN(PackLoraB) {
  Args a(env, info);
  size_t np = 0, nb = 0;
  float* panels = (float*)a.ptr(0, {napi_float32_array}, &np);
  const float* B = (const float*)a.ptr(1, {napi_float32_array}, &nb);
  const long outF = a.l(2), r = a.l(3);
  if (r < 1 || r > DOTS_SMALL_K || outF < 1 || (long)nb != outF * r || (long)np != small_k_panel((int)outF, (int)r))
    throw std::invalid_argument("lora_native: packLoraB: need B [outF, r] with r <= smallK and panels of its size");
  pack_small_k(panels, B, r, (int)r, (int)outF);
}

FN(AttentionBackward) {
  Args a(env, info);
  attention_backward(a.f(0), a.f(1), a.f(2), a.f(3), a.f(4), a.f(5), a.f(6), a.f(7), attn_dims(a, 8));
}

FN(CrossEntropyForward) {
  Args a(env, info);
  check_ids(a.ids(3), (size_t)a.l(4), a.l(5), true, "target");
  cross_entropy_forward(a.f(0), a.f(1), a.f(2), a.ids(3), a.l(4), a.l(5));
}

FN(CrossEntropyBackward) {
  Args a(env, info);
  check_ids(a.ids(3), (size_t)a.l(4), a.l(5), true, "target");
  cross_entropy_backward(a.f(0), a.f(1), a.f(2), a.ids(3), a.l(4), a.l(5), (float)a.d(6));
}

// adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step)
FN(AdamW) {
  Args a(env, info);
  adamw(a.f(0), a.f(1), a.f(2), a.f(3), (long)a.len(0), a.d(4), a.d(5), a.d(6), a.d(7), a.d(8), a.d(9));
}

FN(SetThreads) {
  Args a(env, info);
  set_threads((int)a.l(0));
}

// The exports' calling convention, one number: raised whenever an export's arguments change, so the JS
// side refuses an addon built from older sources (src/kernels/native/node/addon.ts NATIVE_ABI) instead
// of misreading its arguments. 2: loraRows and linearRows take the handle ids and the rows apart. 3:
// packLoraB's panels are info().smallKLanes wide.
constexpr int NATIVE_ABI = 3;

// info(): { abi, isa, bf16, bf16Faster, threads, cpu, forced, error, supported, smallK, smallKLanes,
// invariantRows }: NATIVE_ABI, the ISA level the kernels run at, whether bf16 products are native and
// whether they beat f32 here, the pool's threads, the CPU's best level, whether LORA_ISA forced the
// level, why LORA_ISA was refused ("" if it was not), the levels this CPU runs, best first, the largest
// K the small-k panels take (gemm.h DOTS_SMALL_K) and the outputs in one panel (small_k_lanes), and the
// most rows a rowInvariant product takes through the GEMV (gemm.h INVARIANT_ROWS)
napi_value Info(napi_env env, napi_callback_info info) {
  napi_value o, v;
  napi_create_object(env, &o);
  auto str = [&](const char* name, const char* s) {
    napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, o, name, v);
  };
  auto flag = [&](const char* name, bool b) {
    napi_get_boolean(env, b, &v);
    napi_set_named_property(env, o, name, v);
  };
  napi_create_int32(env, NATIVE_ABI, &v);
  napi_set_named_property(env, o, "abi", v);
  str("isa", gemm_isa());
  flag("bf16", gemm_native_bf16());
  flag("bf16Faster", gemm_bf16_faster());
  napi_create_int32(env, get_threads(), &v);
  napi_set_named_property(env, o, "threads", v);
  str("cpu", gemm_cpu_isa());
  flag("forced", gemm_isa_forced());
  str("error", gemm_isa_error());
  std::vector<std::string> levels = gemm_supported_isas();
  napi_value arr;
  napi_create_array_with_length(env, levels.size(), &arr);
  for (size_t i = 0; i < levels.size(); i++) {
    napi_create_string_utf8(env, levels[i].c_str(), NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, arr, (uint32_t)i, v);
  }
  napi_set_named_property(env, o, "supported", arr);
  napi_create_int32(env, DOTS_SMALL_K, &v);
  napi_set_named_property(env, o, "smallK", v);
  napi_create_int32(env, small_k_lanes(), &v);
  napi_set_named_property(env, o, "smallKLanes", v);
  napi_create_int32(env, INVARIANT_ROWS, &v);
  napi_set_named_property(env, o, "invariantRows", v);
  (void)info;
  return o;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor p[] = {
#define E(name, fn) {name, nullptr, fn, nullptr, nullptr, nullptr, napi_default, nullptr}
      E("matmul", Matmul),
      E("binary", Binary),
      E("sumTo", SumTo),
      E("scale", Scale),
      E("slice", Slice),
      E("sliceBackward", SliceBackward),
      E("embeddingForward", EmbeddingForward),
      E("embeddingBackward", EmbeddingBackward),
      E("layerNormForward", LayerNormForward),
      E("layerNormBackward", LayerNormBackward),
      E("rmsNormForward", RmsNormForward),
      E("rmsNormBackward", RmsNormBackward),
      E("geluForward", GeluForward),
      E("geluBackward", GeluBackward),
      E("siluForward", SiluForward),
      E("siluBackward", SiluBackward),
      E("softcapForward", SoftcapForward),
      E("softcapBackward", SoftcapBackward),
      E("softmaxForward", SoftmaxForward),
      E("softmaxBackward", SoftmaxBackward),
      E("rope", Rope),
      E("ropeRows", RopeRows),
      E("attentionForward", AttentionForward),
      E("attentionRowsForward", AttentionRowsForward),
      E("loraWeights", LoraWeightsNew),
      E("loraRows", LoraRows),
      E("linearRows", LinearRows),
      E("packLoraB", PackLoraB),
      E("attentionBackward", AttentionBackward),
      E("crossEntropyForward", CrossEntropyForward),
      E("crossEntropyBackward", CrossEntropyBackward),
      E("adamw", AdamW),
      E("setThreads", SetThreads),
      E("info", Info),
#undef E
  };
  napi_define_properties(env, exports, sizeof(p) / sizeof(p[0]), p);
  return exports;
}

}  // namespace
}  // namespace lora

NAPI_MODULE(NODE_GYP_MODULE_NAME, lora::Init)
