// libFuzzer target: the checkpoint loader must refuse any byte string with an IoError (or load
// it), never crash, read out of bounds, overflow or leak. Built with clang's
// -fsanitize=fuzzer,address,undefined by tests/fuzz/run.sh.
#include <cstddef>
#include <cstdint>
#include <span>

#include <mla/mla.hpp>

namespace {
// The two model families the loader distinguishes; small enough for the fuzzer to hit.
mla::ModelConfig config() {
  return mla::ModelConfig{.vocab_size = 11, .d_model = 16, .n_heads = 2, .n_layers = 1, .max_seq_len = 8};
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static mla::GPT<mla::MLA<>> mla_model(config(), 1);
  static mla::GPT<mla::MHA<>> mha_model(config(), 1);
  try {
    const mla::SafetensorsFile file =
        mla::parse_safetensors(std::as_bytes(std::span<const std::uint8_t>(data, size)), "fuzz");
    (void)mla::checkpoint_config(file, "fuzz");
    mla::load_parameters(file, "fuzz", mla_model.config(), mla_model.parameters());
    mla::load_parameters(file, "fuzz", mha_model.config(), mha_model.parameters());
  } catch (const mla::IoError&) {
  }
  return 0;
}
