// Checkpoints (docs/design.md §5): round trip, and a loader that trusts nothing.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::check_throws_naming;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny() {
  return ModelConfig{.vocab_size = 11, .d_model = 16, .n_heads = 2, .n_layers = 2, .max_seq_len = 8};
}

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("mla_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::vector<char> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_all(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// A valid file image with a custom header (data section: `data_bytes` zero bytes).
std::vector<char> with_header(const std::string& header, std::size_t data_bytes) {
  std::string image(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) image[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  image += header;
  image.append(data_bytes, '\0');
  return {image.begin(), image.end()};
}

}  // namespace

TEST_CASE_TEMPLATE("checkpoint: save then load gives the same weights and config", P, MHA<Rope::None>, GQA<2>,
                   MQA<Rope::Decoupled>, MLA<>, MLA<Dynamic, 0, 0>) {
  const fs::path dir = temp_dir();
  const fs::path path = dir / "model.safetensors";
  GPT<P> model(tiny(), 42);
  save_model(path, model);
  auto loaded = load_model<P>(path);
  CHECK(loaded->config() == model.config());
  CHECK(loaded->parameters().values().to_vector() == model.parameters().values().to_vector());
  // The file follows the format: header length, JSON with the config, F32 tensors.
  const SafetensorsFile file = read_safetensors(path);
  CHECK(file.metadata.at("config").find("\"attention\":\"" + std::string(to_string(P::kind)) + "\"") != std::string::npos);
  CHECK(file.tensors.at("wte.weight").shape == Shape{11, 16});
  CHECK(file.tensors.size() == static_cast<std::size_t>(model.parameters().size()));
  // No temporary file is left beside it.
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++files;
  CHECK(files == 1);
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: optim./train. tensors ride along and a model loader ignores them") {
  const fs::path dir = temp_dir();
  GPT<MLA<>> model(tiny(), 1);
  const std::vector<std::int64_t> step{7};
  const SafetensorsTensor extra[] = {{"train.step", DType::I64, Shape{1}, std::as_bytes(std::span<const std::int64_t>(step))}};
  save_model(dir / "m.safetensors", model, extra);
  auto loaded = load_model<MLA<>>(dir / "m.safetensors");
  CHECK(loaded->parameters().values().to_vector() == model.parameters().values().to_vector());
  const auto file = read_safetensors(dir / "m.safetensors");
  CHECK(file.tensors.at("train.step").dtype == DType::I64);
  const SafetensorsTensor bad[] = {{"bogus", DType::I64, Shape{1}, std::as_bytes(std::span<const std::int64_t>(step))}};
  check_throws_naming<IoError>([&] { save_model(dir / "x.safetensors", model, bad); }, {"bogus", "optim."});
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: every corruption is refused with the file and the problem named") {
  const fs::path dir = temp_dir();
  const fs::path good = dir / "good.safetensors";
  GPT<MHA<>> model(tiny(), 3);
  save_model(good, model);
  const std::vector<char> image = read_all(good);
  const fs::path bad = dir / "bad.safetensors";
  auto expect = [&](const std::vector<char>& bytes, std::initializer_list<const char*> needles) {
    write_all(bad, bytes);
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(bad); }, needles);
  };

  SUBCASE("missing file") {
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(dir / "nope.safetensors"); }, {"nope.safetensors", "cannot open"});
  }
  SUBCASE("truncated anywhere") {
    for (std::size_t cut : {std::size_t{0}, std::size_t{5}, std::size_t{40}, image.size() / 2, image.size() - 1}) {
      CAPTURE(cut);
      expect(std::vector<char>(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(cut)), {"bad.safetensors"});
    }
  }
  SUBCASE("trailing bytes") {
    auto longer = image;
    longer.push_back(0);
    expect(longer, {"file length"});
  }
  SUBCASE("huge header length") {
    auto b = image;
    b[7] = 0x7f;
    expect(b, {"header length"});
  }
  SUBCASE("malformed JSON") { expect(with_header("{\"a\": ", 0), {"not valid JSON"}); }
  SUBCASE("not an object") { expect(with_header("[1, 2]", 0), {"not a JSON object"}); }
  SUBCASE("bad dtype") {
    expect(with_header(R"({"t": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}})", 2), {"unsupported dtype"});
  }
  SUBCASE("offsets out of bounds") {
    expect(with_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8), {"outside the data"});
  }
  SUBCASE("size does not match shape") {
    expect(with_header(R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8), {"8 bytes for shape [3]"});
  }
  SUBCASE("overlap and gap") {
    expect(with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12), {"gap or overlap"});
    expect(with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8), {"gap or overlap"});
  }
  SUBCASE("shape overflow") {
    expect(with_header(R"({"t": {"dtype": "F64", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 0]}})", 0),
           {"overflow"});
  }
  SUBCASE("negative or fractional sizes, missing fields") {
    expect(with_header(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0), {"non-negative"});
    expect(with_header(R"({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 0]}})", 0), {"non-negative"});
    expect(with_header(R"({"t": {"dtype": "F32", "shape": [1]}})", 0), {"exactly dtype, shape and data_offsets"});
  }
  SUBCASE("no config, a bad config, another attention") {
    expect(with_header(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4), {"no \"config\""});
    expect(with_header(R"({"__metadata__": {"config": "{\"vocab_size\": 1}"}})", 0), {"missing 'd_model'"});
    GPT<MQA<>> other(tiny(), 1);
    save_model(bad, other);
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(bad); }, {"mqa", "expected mha"});
  }
  SUBCASE("a missing, a misshapen, a wrongly typed and an unknown tensor") {
    const SafetensorsFile f = read_safetensors(good);
    auto rewrite = [&](auto edit) {
      std::vector<SafetensorsTensor> ts;
      std::vector<std::vector<std::byte>> keep;
      for (const auto& [name, e] : f.tensors) {
        auto bytes = f.bytes(e);
        keep.emplace_back(bytes.begin(), bytes.end());
        ts.push_back({name, e.dtype, e.shape, keep.back()});
      }
      edit(ts, keep);
      write_safetensors(bad, ts, f.metadata);
    };
    rewrite([](auto& ts, auto&) { std::erase_if(ts, [](const auto& t) { return t.name == "ln_f.bias"; }); });
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(bad); }, {"missing tensor 'ln_f.bias'"});
    rewrite([](auto& ts, auto&) {
      for (auto& t : ts)
        if (t.name == "ln_f.bias") { t.shape = Shape{4, 4}; }
    });
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(bad); }, {"ln_f.bias", "[4, 4]", "expected [16]"});
    rewrite([](auto& ts, auto&) {
      for (auto& t : ts)
        if (t.name == "ln_f.bias") { t.dtype = DType::I32; }
    });
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(bad); }, {"ln_f.bias", "I32"});
    rewrite([](auto& ts, auto& keep) {
      keep.emplace_back(4);
      ts.push_back({"layers.9.attn.q_proj.weight", DType::F32, Shape{1}, keep.back()});
    });
    check_throws_naming<IoError>([&] { (void)load_model<MHA<>>(bad); }, {"unknown tensor 'layers.9.attn.q_proj.weight'"});
  }
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: a failed load leaves the model untouched and a failed save the old file") {
  const fs::path dir = temp_dir();
  GPT<MHA<>> a(tiny(), 1), b(tiny(), 2);
  save_model(dir / "m.safetensors", a);
  const auto before = read_all(dir / "m.safetensors");
  // Saving into a folder that does not exist fails cleanly and leaves m.safetensors alone.
  check_throws_naming<IoError>([&] { save_model(dir / "missing" / "m.safetensors", b); }, {"missing"});
  CHECK(read_all(dir / "m.safetensors") == before);
  // A corrupt file does not change a model it is loaded into.
  auto image = before;
  image.resize(image.size() - 4);
  write_all(dir / "c.safetensors", image);
  const auto weights = b.parameters().values().to_vector();
  const SafetensorsFile good = read_safetensors(dir / "m.safetensors");
  GPT<MHA<>> other_shape(ModelConfig{.vocab_size = 12, .d_model = 16, .n_heads = 2, .n_layers = 2, .max_seq_len = 8}, 1);
  const auto other_weights = other_shape.parameters().values().to_vector();
  check_throws_naming<IoError>([&] { load_parameters(good, "m", other_shape.config(), other_shape.parameters()); },
                               {"vocab_size"});
  CHECK(other_shape.parameters().values().to_vector() == other_weights);
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: latent_norm is stored when not the default, read back, and checked") {
  const fs::path dir = temp_dir();
  for (LatentNorm norm : {LatentNorm::LayerNorm, LatentNorm::RmsNorm, LatentNorm::None}) {
    CAPTURE(to_string(norm));
    ModelConfig cfg = tiny();
    cfg.latent_norm = norm;
    GPT<MLA<>> model(cfg, 5);
    const fs::path path = dir / (std::string(to_string(norm)) + ".safetensors");
    save_model(path, model);
    const std::string json = read_safetensors(path).metadata.at("config");
    // A config without the key means layernorm; any other norm is named.
    CHECK((json.find("latent_norm") != std::string::npos) == (norm != LatentNorm::LayerNorm));
    const auto loaded = load_model<MLA<>>(path);
    CHECK(loaded->config().latent_norm == norm);
    CHECK(loaded->parameters().values().to_vector() == model.parameters().values().to_vector());
  }
  // A model of another norm does not take the file's weights.
  ModelConfig rms = tiny();
  rms.latent_norm = LatentNorm::RmsNorm;
  GPT<MLA<>> other(rms, 6);
  const SafetensorsFile file = read_safetensors(dir / "none.safetensors");
  check_throws_naming<IoError>([&] { load_parameters(file, "none.safetensors", other.config(), other.parameters()); },
                               {"latent_norm", "none", "rmsnorm"});
  // An unknown norm is named.
  const std::string text = config_to_json(other.config());
  const std::string bad = text.substr(0, text.find("\"rmsnorm\"")) + "\"groupnorm\"}";
  check_throws_naming<IoError>([&] { (void)config_from_json(bad, "x"); }, {"latent_norm", "groupnorm"});
  fs::remove_all(dir);
}
