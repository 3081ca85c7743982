/**
 * accelerate_config.yaml for a strategy, as `accelerate config` writes it (the keys of accelerate 1.15's
 * ClusterConfig; TRL's examples in trl/accelerate_configs). With accelerate 1.x, `--cpu` (and a config's
 * distributed_type NO) launches one process whatever num_processes says, so more than one process runs
 * as distributed_type MULTI_GPU with use_cpu: true; train.py's SFTConfig(use_cpu=True) makes
 * PartialState(cpu=True) see WORLD_SIZE > 1 and start torch.distributed with gloo. Pure.
 */
import { stringify } from "yaml";
import type { EngineOptions } from "./mapping.js";

/** The config as an object (the YAML's content), for tests and for the file. */
export function accelerateConfig(o: EngineOptions): Record<string, unknown> {
  const cpu = o.device === "cpu";
  const distributed =
    o.numProcesses === 1 && o.strategy === "ddp"
      ? "NO"
      : o.strategy === "ddp"
        ? "MULTI_GPU"
        : o.strategy === "fsdp"
          ? "FSDP"
          : "DEEPSPEED";
  const c: Record<string, unknown> = {
    compute_environment: "LOCAL_MACHINE",
    debug: false,
    distributed_type: distributed,
    downcast_bf16: "no",
    machine_rank: 0,
    main_training_function: "main",
    mixed_precision: o.mixedPrecision,
    num_machines: 1,
    num_processes: o.numProcesses,
    // 0: accelerate picks a free port, so two runs on one machine do not collide
    main_process_port: 0,
    rdzv_backend: "static",
    same_network: true,
    tpu_env: [],
    tpu_use_cluster: false,
    tpu_use_sudo: false,
    use_cpu: cpu,
  };
  if (!cpu) c.gpu_ids = "all";
  if (o.strategy === "fsdp")
    c.fsdp_config = {
      fsdp_activation_checkpointing: false,
      fsdp_auto_wrap_policy: "TRANSFORMER_BASED_WRAP",
      fsdp_cpu_ram_efficient_loading: true,
      fsdp_offload_params: false,
      fsdp_reshard_after_forward: true,
      fsdp_state_dict_type: "FULL_STATE_DICT",
      fsdp_version: 2,
    };
  if (o.strategy === "deepspeed-zero2" || o.strategy === "deepspeed-zero3") {
    const three = o.strategy === "deepspeed-zero3";
    c.deepspeed_config = {
      deepspeed_multinode_launcher: "standard",
      offload_optimizer_device: "none",
      offload_param_device: "none",
      zero3_init_flag: three,
      ...(three ? { zero3_save_16bit_model: true } : {}),
      zero_stage: three ? 3 : 2,
    };
  }
  return c;
}

export function accelerateConfigYaml(o: EngineOptions): string {
  return `# Written by lora scale-out (accelerate 1.15's config keys).\n${stringify(accelerateConfig(o), { version: "1.1" })}`;
}
