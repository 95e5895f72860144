// Data-parallel training's all-reduce from a downstream project, through mla::mpi.
#include <cstdio>
#include <span>
#include <vector>

#include <mla/mla.hpp>
#include <mla/parallel/mpi.hpp>

int main(int argc, char** argv) {
  mla::mpi::Environment mpi(argc, argv);
  mla::mpi::Communicator world;
  mla::GPT<mla::MQA<>> model({.vocab_size = 64, .d_model = 32, .n_heads = 2, .n_layers = 1, .max_seq_len = 8}, 1);
  const auto& grads = model.parameters().grads();
  world.sum_in_rank_order(std::span<float>(grads.data(), static_cast<std::size_t>(grads.numel())));
  std::printf("rank %d of %d\n", world.rank(), world.size());
  return 0;
}
