/**
 * Server counters, shown at GET /metrics in Prometheus' text format (as vLLM does): requests by
 * outcome, prompt and generated tokens, generated tokens per second over the last 10 s, requests
 * running and waiting, and a histogram of decode-step batch sizes.
 */

const WINDOW_MS = 10_000;
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64];

export class Metrics {
  private readonly requests = new Map<string, number>(); // "endpoint status" -> count
  promptTokens = 0;
  generationTokens = 0;
  private readonly recent: number[] = []; // times of generated tokens in the window (ms)
  private readonly batchCounts = new Array<number>(BATCH_BUCKETS.length + 1).fill(0);
  private batchSteps = 0;
  private batchRows = 0;

  constructor(private readonly now: () => number = () => Date.now()) {}

  request(endpoint: string, status: number): void {
    const key = `${endpoint} ${status}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  /** One decode step over `rows` sequences. */
  step(rows: number): void {
    this.batchSteps++;
    this.batchRows += rows;
    const i = BATCH_BUCKETS.findIndex((b) => rows <= b);
    this.batchCounts[i < 0 ? BATCH_BUCKETS.length : i]!++;
  }

  tokens(n: number): void {
    this.generationTokens += n;
    const t = this.now();
    for (let i = 0; i < n; i++) this.recent.push(t);
    this.trim(t);
  }

  /** Generated tokens per second over the last 10 s. */
  tokensPerSecond(): number {
    const t = this.now();
    this.trim(t);
    return this.recent.length / (WINDOW_MS / 1000);
  }

  private trim(t: number): void {
    let drop = 0;
    while (drop < this.recent.length && this.recent[drop]! < t - WINDOW_MS) drop++;
    if (drop > 0) this.recent.splice(0, drop);
  }

  /** The Prometheus exposition text, with the scheduler's current depths. */
  text(state: { running: number; waiting: number; kv: { inUse: number; positions: number } }): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, rows: string[]) =>
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...rows);
    metric(
      "lora_requests_total",
      "counter",
      "HTTP requests by endpoint and status.",
      [...this.requests].map(([k, v]) => {
        const [endpoint, status] = k.split(" ");
        return `lora_requests_total{endpoint="${endpoint}",status="${status}"} ${v}`;
      }),
    );
    metric("lora_prompt_tokens_total", "counter", "Prompt tokens processed.", [
      `lora_prompt_tokens_total ${this.promptTokens}`,
    ]);
    metric("lora_generation_tokens_total", "counter", "Tokens generated.", [
      `lora_generation_tokens_total ${this.generationTokens}`,
    ]);
    metric("lora_generation_tokens_per_second", "gauge", "Tokens generated per second, last 10 s.", [
      `lora_generation_tokens_per_second ${this.tokensPerSecond()}`,
    ]);
    metric("lora_num_requests_running", "gauge", "Sequences being decoded.", [
      `lora_num_requests_running ${state.running}`,
    ]);
    metric("lora_num_requests_waiting", "gauge", "Requests in the queue.", [
      `lora_num_requests_waiting ${state.waiting}`,
    ]);
    metric("lora_kv_cache_positions", "gauge", "KV-cache positions of the batched step's pool.", [
      `lora_kv_cache_positions{state="in_use"} ${state.kv.inUse}`,
      `lora_kv_cache_positions{state="total"} ${state.kv.positions}`,
    ]);
    let acc = 0;
    const buckets = BATCH_BUCKETS.map((b, i) => {
      acc += this.batchCounts[i]!;
      return `lora_batch_size_bucket{le="${b}"} ${acc}`;
    });
    metric("lora_batch_size", "histogram", "Sequences per decode step.", [
      ...buckets,
      `lora_batch_size_bucket{le="+Inf"} ${this.batchSteps}`,
      `lora_batch_size_sum ${this.batchRows}`,
      `lora_batch_size_count ${this.batchSteps}`,
    ]);
    return `${lines.join("\n")}\n`;
  }
}
