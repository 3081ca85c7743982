# -fno-trapping-math: see native/src/simd.h (without it GCC leaves the AVX2 and baseline element-wise loops scalar)
{
  "targets": [
    {
      "target_name": "lora_native",
      "sources": ["src/addon.cc", "src/pool.cc", "src/gemm.cc", "src/ops.cc", "src/attention.cc", "src/lora_rows.cc"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O3"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-Wall", "-Wno-unused-function"],
      "conditions": [["OS=='mac'", {"xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math"], "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17", "MACOSX_DEPLOYMENT_TARGET": "10.15"}}]]
    }
  ]
}
