// Writes the fuzzers' seed corpora: valid checkpoints of the models fuzz_checkpoint loads, and
// a valid token file for fuzz_tokens.
#include <cstdio>
#include <string>
#include <vector>

#include <mla/mla.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const mla::ModelConfig cfg{.vocab_size = 11, .d_model = 16, .n_heads = 2, .n_layers = 1, .max_seq_len = 8};
  mla::save_model(dir + "/mla.safetensors", mla::GPT<mla::MLA<>>(cfg, 1));
  mla::save_model(dir + "/mha.safetensors", mla::GPT<mla::MHA<>>(cfg, 2));
  const std::vector<std::uint16_t> tokens{1, 2, 3, 40000, 5, 6, 7, 8, 9, 10, 11};
  mla::write_tokens(dir + "/tokens/tokens.bin", tokens);
  return 0;
}
