// generate — text from a checkpoint: tokenize a prompt, prefill the KV cache, sample tokens.
//
//   generate --checkpoint FILE --tokenizer FILE.model --prompt TEXT [--tokens 100]
//            [--temperature 0.8] [--top-k 0] [--top-p 1.0] [--seed 0] [--stop TEXT-or-id]
//            [--cache latent|full] [--cache-dtype f32|bf16|int8] [--decode absorbed|materialized|auto]
//            [--threads N]
//            [--device cpu|cuda]
//
// Prints the prompt and its continuation, then the prefill time, the decoding speed in
// tokens/s, and the KV cache per token (values and bytes over all layers: the reference experiments'
// "params per token"). --temperature 0 is greedy; --top-k 0 and --top-p 1 cut nothing.
// --stop: a number is a token id, anything else a text; generation stops when it appears,
// and it is not printed.
// --cache latent (the default for MLA) caches kv_rank + rope_dim floats per token and layer;
// --cache full caches decompressed keys and values (the only mode of MHA/GQA/MQA).
// --cache-dtype stores the cache as float32, bfloat16 or int8 (one float32 scale per 64 values of
// a token's head or latent; MLA's rotated key in bf16): 2 or about 4 times fewer bytes (CPU).
// --decode picks how MLA attends over its latent cache (auto: the cheaper one per step).
// --device cuda runs the model on the GPU (a build with the CUDA backend; its name is the last
// line); the sampler runs on the host either way, so greedy text is the same on both.
#include <string>

#include <CLI/CLI.hpp>

#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/device.hpp"
#include "common/generate_run.hpp"
#include "common/text.hpp"

namespace {

constexpr const char* kProgram = "generate";

}  // namespace

int main(int argc, char** argv) {
  examples::generation::Options opt;
  CLI::App app{"Generates text from a checkpoint with a KV cache, and reports the decoding speed and cache size."};
  app.add_option("--checkpoint", opt.checkpoint, "model checkpoint (.safetensors)")->required();
  app.add_option("--tokenizer", opt.tokenizer, "sentencepiece model (data/tokenizer.model)")->required();
  app.add_option("--prompt", opt.prompt, "text to continue")->required();
  app.add_option("--tokens", opt.tokens, "tokens to generate")->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 24));
  app.add_option("--temperature", opt.temperature, "sampling temperature (0: greedy)")->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", opt.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 20));
  app.add_option("--top-p", opt.top_p, "nucleus: the smallest set with this much probability (1: all)")
      ->capture_default_str()->check(CLI::Range(1e-6, 1.0));
  app.add_option("--seed", opt.seed, "sampling seed")->capture_default_str();
  app.add_option("--stop", opt.stop, "stop at this token id (a number) or text");
  app.add_option("--cache", opt.cache, "KV cache: latent (MLA only; its default) or full")
      ->check(CLI::IsMember({"latent", "full"}));
  app.add_option("--cache-dtype", opt.cache_dtype, "how the KV cache stores values: f32, bf16 or int8 (CPU)")
      ->capture_default_str()->check(CLI::IsMember({"f32", "bf16", "int8"}));
  app.add_option("--decode", opt.decode, "MLA attention over the latent cache")->capture_default_str()
      ->check(CLI::IsMember({"absorbed", "materialized", "auto"}));
  app.add_option("--threads", opt.threads, "CPU threads (default: all)")->check(CLI::Range(1, 1024));
  app.add_option("--device", opt.device, "where the model runs: cpu, or cuda (a GPU; needs the CUDA backend)")
      ->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  return examples::run_main(kProgram, app, argc, argv, [&] {
    const std::string device = opt.device == "cuda" ? examples::require_cuda() : "";
    if (opt.threads > 0) mla::set_num_threads(opt.threads);
    const mla::ModelConfig stored = examples::read_checkpoint_config(opt.checkpoint);
    const examples::Tokenizer tok(opt.tokenizer);
    if (opt.device == "cpu") return examples::generation::generate_on<mla::Cpu>(stored, tok, opt);
    const int status = examples::generation::generate_on_cuda(stored, tok, opt);
    std::cout << "device: cuda (" << device << ")\n";
    return status;
  });
}
