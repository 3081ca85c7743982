// A small persistent thread pool. The calling (JS main) thread runs task 0..n-1 together with the workers;
// run() returns when every task is done. Tasks must write disjoint outputs, so results never depend on
// which thread ran a task, nor on the thread count.
#pragma once
#include <functional>

namespace lora {

void set_threads(int n);  // total threads including the caller; >= 1
int get_threads();

// fn(task) for task in [0, n); runs inline when n == 1 or the pool has one thread
void parallel_for(int n, const std::function<void(int)>& fn);

// splits [0, total) into at most get_threads() ranges of at least `grain` items (in multiples of `align`)
// and runs fn(begin, end) on each
void parallel_range(long total, long grain, long align, const std::function<void(long, long)>& fn);

}  // namespace lora
