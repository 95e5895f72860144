// Must not compile: a GQA with zero kv heads. With MLA_FAILTEST_OK the same program uses two
// kv heads and compiles.
#include <mla/model/config.hpp>

int main() {
#if defined(MLA_FAILTEST_OK)
  using Policy = mla::GQA<2>;
#else
  using Policy = mla::GQA<0>;
#endif
  mla::ModelConfig cfg{.vocab_size = 8, .d_model = 8, .n_heads = 2, .n_layers = 1, .max_seq_len = 4};
  return mla::resolve<Policy>(cfg).n_kv_heads == 2 ? 0 : 1;
}
