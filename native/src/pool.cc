// The pool: workers sleep on a condition variable between calls, after spinning briefly (calls come in
// quick succession during a training step; waking a sleeping thread costs tens of microseconds).
// Each run is its own Job: a worker that wakes late only ever claims from the job it picked up, and finds
// it exhausted, so it can never run a task of the next call nor touch a finished call's function.
#include "pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace lora {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");  // the spin-wait hint of arm64, as pause is x86's
#endif
}

constexpr auto SPIN = std::chrono::microseconds(50);

struct Job {
  const std::function<void(int)>* fn;
  int n;
  std::atomic<int> next{0};
  std::atomic<int> done{0};
  std::atomic<bool> failed{false};

  void work() {
    for (int t = next.fetch_add(1); t < n; t = next.fetch_add(1)) {
      try {
        (*fn)(t);
      } catch (...) {  // never let an exception end a worker thread (std::terminate)
        failed.store(true);
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

struct Pool {
  std::mutex mu;
  std::condition_variable wake;
  std::atomic<long> generation{0};
  std::shared_ptr<Job> current;  // guarded by mu
  std::mutex running;            // one run at a time (the addon may be loaded in several JS threads)
  int started = 0;
  int threads = 1;

  void loop() {
    long seen = 0;
    for (;;) {
      // spin for SPIN, then sleep. The spin is timed, not counted in pauses: a pause takes 10 ns on a
      // Xeon (Sapphire Rapids class), a few cycles on other CPUs, 140 cycles on Skylake-SP, so a count meant
      // anything from microseconds to a millisecond of a core kept busy. 50 us bridges the gaps
      // between the kernels of a step (bench:serve gained nothing from 300 us on a 2-core Xeon).
      const auto until = std::chrono::steady_clock::now() + SPIN;
      for (int i = 0; generation.load(std::memory_order_acquire) == seen; i++) {
        cpu_relax();
        if (i % 64 == 63 && std::chrono::steady_clock::now() > until) break;
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] { return generation.load() != seen; });
        seen = generation.load();
        job = current;
      }
      if (job) job->work();
    }
  }

  void run(int n, const std::function<void(int)>& f) {
    if (n <= 0) return;
    std::unique_lock<std::mutex> one(running, std::try_to_lock);
    if (n == 1 || threads == 1 || !one.owns_lock()) {  // inline (also when another JS thread holds the pool)
      for (int t = 0; t < n; t++) f(t);
      return;
    }
    while (started < threads - 1) {
      std::thread([this] { loop(); }).detach();
      started++;
    }
    auto job = std::make_shared<Job>();
    job->fn = &f;
    job->n = n;
    {
      std::lock_guard<std::mutex> lock(mu);
      current = job;
      generation.fetch_add(1, std::memory_order_release);
    }
    wake.notify_all();
    job->work();
    while (job->done.load(std::memory_order_acquire) < n) cpu_relax();
    {
      std::lock_guard<std::mutex> lock(mu);
      current.reset();
    }
    if (job->failed.load()) throw std::runtime_error("a native kernel failed in a worker thread");
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: detached workers may outlive static destructors
  return *p;
}

}  // namespace

void set_threads(int n) { pool().threads = n < 1 ? 1 : n; }
int get_threads() { return pool().threads; }

void parallel_for(int n, const std::function<void(int)>& fn) { pool().run(n, fn); }

void parallel_range(long total, long grain, long align, const std::function<void(long, long)>& fn) {
  if (total <= 0) return;
  long parts = total / (grain > 0 ? grain : 1);
  if (parts > get_threads()) parts = get_threads();
  if (parts < 1) parts = 1;
  long per = (total + parts - 1) / parts;
  per = (per + align - 1) / align * align;
  int n = (int)((total + per - 1) / per);
  parallel_for(n, [&](int t) {
    long b = t * per, e = b + per < total ? b + per : total;
    if (b < e) fn(b, e);
  });
}

}  // namespace lora
