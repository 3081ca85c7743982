// The pool: workers sleep on a condition variable between calls, after spinning briefly (calls come in
// quick succession during a training step; waking a sleeping thread costs tens of microseconds).
#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace lora {
namespace {

struct Pool {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable wake;
  std::atomic<long> generation{0};
  std::atomic<int> next{0};
  std::atomic<int> done{0};
  int tasks = 0;
  const std::function<void(int)>* fn = nullptr;
  int threads = 1;

  void work() {
    for (int t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) {
      (*fn)(t);
      done.fetch_add(1, std::memory_order_release);
    }
  }

  void loop() {
    long seen = generation.load();
    for (;;) {
      // spin ~50 us, then sleep
      for (int i = 0; i < 20000 && generation.load(std::memory_order_acquire) == seen; i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      if (generation.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] { return generation.load() != seen; });
      }
      seen = generation.load();
      work();
    }
  }

  void ensure() {
    while ((int)workers.size() < threads - 1) {
      workers.emplace_back([this] { loop(); });
      workers.back().detach();
    }
  }

  void run(int n, const std::function<void(int)>& f) {
    if (n <= 0) return;
    if (n == 1 || threads == 1) {
      for (int t = 0; t < n; t++) f(t);
      return;
    }
    ensure();
    fn = &f;
    tasks = n;
    done.store(0);
    next.store(0);
    {
      std::lock_guard<std::mutex> lock(mu);
      generation.fetch_add(1, std::memory_order_release);
    }
    wake.notify_all();
    work();
    while (done.load(std::memory_order_acquire) < n) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
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
