// mla/io/checkpoint.hpp — a model as a safetensors checkpoint (docs/design.md §5).
//
// Model tensors are F32 under their §5 names; `__metadata__` holds "config", the resolved
// ModelConfig as a JSON string. Tensors named optim.* or train.* (optimizer state, training
// progress) may sit beside them: a model loader ignores them, a trainer reads them back.
//
// load_parameters trusts nothing: on top of parse_safetensors' checks, the config must parse
// strictly and equal the model's, every model tensor must be present as F32 with its exact
// shape, and no tensor outside optim./train. may be unknown. Nothing of the model changes
// unless every check passes.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mla/io/safetensors.hpp"
#include "mla/model/config.hpp"
#include "mla/model/gpt.hpp"
#include "mla/nn/parameters.hpp"

namespace mla {

/// The config as the checkpoint's JSON: every field that applies to its attention kind.
inline std::string config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["vocab_size"] = c.vocab_size;
  j["d_model"] = c.d_model;
  j["n_heads"] = c.n_heads;
  j["n_layers"] = c.n_layers;
  j["max_seq_len"] = c.max_seq_len;
  j["attention"] = to_string(c.attention);
  j["rope"] = to_string(c.rope);
  j["head_dim"] = c.head_dim;
  if (c.attention == AttentionKind::MLA) {
    j["q_rank"] = c.q_rank;
    j["kv_rank"] = c.kv_rank;
    j["qk_nope_dim"] = c.qk_nope_dim;
    j["qk_rope_dim"] = c.qk_rope_dim;
    j["v_head_dim"] = c.v_head_dim;
  } else {
    j["n_kv_heads"] = c.n_kv_heads;
    if (c.rope == Rope::Decoupled) j["qk_rope_dim"] = c.qk_rope_dim;
  }
  j["rope_theta"] = c.rope_theta;
  j["ln_eps"] = c.ln_eps;
  if (c.latent_norm != LatentNorm::LayerNorm) j["latent_norm"] = to_string(c.latent_norm);
  return j.dump();
}

/// Parses a checkpoint's config strictly: known keys only, integers where sizes go, a known
/// attention and rope. The result is unresolved: resolve<P> validates it against a policy.
inline ModelConfig config_from_json(const std::string& text, const std::string& where) {
  auto fail = [&](const std::string& what) -> void { throw IoError(where + ": config: " + what); };
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail("not a JSON object");
  ModelConfig c;
  static const std::set<std::string> known = {
      "vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len", "attention", "rope", "n_kv_heads",
      "head_dim", "q_rank", "kv_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim", "rope_theta", "ln_eps",
      "latent_norm"};
  for (const auto& [key, value] : j.items()) {
    if (!known.contains(key)) fail("unknown key '" + key + "'");
  }
  auto integer = [&](const char* key, std::int64_t& out, bool required) {
    if (!j.contains(key)) {
      if (required) fail(std::string("missing '") + key + "'");
      return;
    }
    const auto& v = j[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > (std::int64_t{1} << 31)) {
      fail(std::string("'") + key + "' is not a size");
    }
    out = v.get<std::int64_t>();
  };
  auto number = [&](const char* key, double& out) {
    if (!j.contains(key)) return;
    if (!j[key].is_number()) fail(std::string("'") + key + "' is not a number");
    out = j[key].get<double>();
  };
  integer("vocab_size", c.vocab_size, true);
  integer("d_model", c.d_model, true);
  integer("n_heads", c.n_heads, true);
  integer("n_layers", c.n_layers, true);
  integer("max_seq_len", c.max_seq_len, true);
  for (const char* key : {"n_kv_heads", "head_dim", "q_rank", "kv_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim"}) {
    std::int64_t* field = std::strcmp(key, "n_kv_heads") == 0 ? &c.n_kv_heads
                        : std::strcmp(key, "head_dim") == 0   ? &c.head_dim
                        : std::strcmp(key, "q_rank") == 0     ? &c.q_rank
                        : std::strcmp(key, "kv_rank") == 0    ? &c.kv_rank
                        : std::strcmp(key, "qk_nope_dim") == 0 ? &c.qk_nope_dim
                        : std::strcmp(key, "qk_rope_dim") == 0 ? &c.qk_rope_dim
                                                               : &c.v_head_dim;
    integer(key, *field, false);
  }
  number("rope_theta", c.rope_theta);
  number("ln_eps", c.ln_eps);
  if (!j.contains("attention") || !j["attention"].is_string()) fail("missing 'attention'");
  if (!j.contains("rope") || !j["rope"].is_string()) fail("missing 'rope'");
  const std::string attention = j["attention"].get<std::string>(), rope = j["rope"].get<std::string>();
  if (attention == "mha") c.attention = AttentionKind::MHA;
  else if (attention == "gqa") c.attention = AttentionKind::GQA;
  else if (attention == "mqa") c.attention = AttentionKind::MQA;
  else if (attention == "mla") c.attention = AttentionKind::MLA;
  else fail("unknown attention '" + attention + "'");
  if (rope == "none") c.rope = Rope::None;
  else if (rope == "full") c.rope = Rope::Full;
  else if (rope == "decoupled") c.rope = Rope::Decoupled;
  else fail("unknown rope '" + rope + "'");
  if (j.contains("latent_norm")) {  // absent: layernorm
    if (!j["latent_norm"].is_string()) fail("'latent_norm' is not a string");
    const std::string norm = j["latent_norm"].get<std::string>();
    if (norm == "layernorm") c.latent_norm = LatentNorm::LayerNorm;
    else if (norm == "rmsnorm") c.latent_norm = LatentNorm::RmsNorm;
    else if (norm == "none") c.latent_norm = LatentNorm::None;
    else fail("unknown latent_norm '" + norm + "' (layernorm, rmsnorm or none)");
  }
  return c;
}

/// The config stored in a parsed checkpoint.
inline ModelConfig checkpoint_config(const SafetensorsFile& file, const std::string& where) {
  const auto it = file.metadata.find("config");
  if (it == file.metadata.end()) throw IoError(where + ": no \"config\" in __metadata__");
  return config_from_json(it->second, where);
}

/// Writes every parameter (as F32), the config, and `extra` tensors (names starting with
/// optim. or train.) to `path`, atomically.
template <class T, Device D>
void save_checkpoint(const std::filesystem::path& path, const ModelConfig& cfg,
                     const ParameterStore<T, D>& store, std::span<const SafetensorsTensor> extra = {}) {
  std::vector<std::vector<float>> buffers;
  std::vector<SafetensorsTensor> tensors;
  buffers.reserve(store.entries().size());
  for (std::int32_t i = 0; i < store.size(); ++i) {
    const auto& e = store.entries()[static_cast<std::size_t>(i)];
    const auto values = store.value(i).to_vector();
    buffers.emplace_back(values.begin(), values.end());
    tensors.push_back({e.name, DType::F32, e.shape, std::as_bytes(std::span<const float>(buffers.back()))});
  }
  for (const SafetensorsTensor& t : extra) {
    if (!t.name.starts_with("optim.") && !t.name.starts_with("train.")) {
      throw IoError(path.string() + ": extra tensor '" + t.name + "' must start with optim. or train.");
    }
    tensors.push_back(t);
  }
  write_safetensors(path, tensors, {{"config", config_to_json(cfg)}});
}

/// Checks `file` against the model (`cfg`, `store`) and copies its tensors into the store.
template <class T, Device D>
void load_parameters(const SafetensorsFile& file, const std::string& where, const ModelConfig& cfg,
                     ParameterStore<T, D>& store) {
  const ModelConfig stored = checkpoint_config(file, where);
  auto same = [&](const char* what, auto a, auto b) {
    if (a != b) {
      throw IoError(where + ": config " + what + " is " + std::to_string(a) + " in the file but " +
                    std::to_string(b) + " in the model");
    }
  };
  if (stored.attention != cfg.attention || stored.rope != cfg.rope) {
    throw IoError(where + ": the file holds " + to_string(stored.attention) + " attention with rope " +
                  to_string(stored.rope) + ", the model is " + to_string(cfg.attention) + " with rope " +
                  to_string(cfg.rope));
  }
  same("vocab_size", stored.vocab_size, cfg.vocab_size);
  same("d_model", stored.d_model, cfg.d_model);
  same("n_heads", stored.n_heads, cfg.n_heads);
  same("n_layers", stored.n_layers, cfg.n_layers);
  same("max_seq_len", stored.max_seq_len, cfg.max_seq_len);
  // The optional sizes the file states must match too (shapes alone cannot tell a nope/rope split).
  const std::pair<const char*, std::pair<std::int64_t, std::int64_t>> sizes[] = {
      {"n_kv_heads", {stored.n_kv_heads, cfg.n_kv_heads}},   {"head_dim", {stored.head_dim, cfg.head_dim}},
      {"q_rank", {stored.q_rank, cfg.q_rank}},               {"kv_rank", {stored.kv_rank, cfg.kv_rank}},
      {"qk_nope_dim", {stored.qk_nope_dim, cfg.qk_nope_dim}}, {"qk_rope_dim", {stored.qk_rope_dim, cfg.qk_rope_dim}},
      {"v_head_dim", {stored.v_head_dim, cfg.v_head_dim}}};
  for (const auto& [what, pair] : sizes) {
    if (pair.first != Dynamic) same(what, pair.first, pair.second);
  }
  if (stored.rope_theta != cfg.rope_theta || stored.ln_eps != cfg.ln_eps) {
    throw IoError(where + ": config rope_theta/ln_eps differ between the file and the model");
  }
  if (stored.latent_norm != cfg.latent_norm) {
    throw IoError(where + ": config latent_norm is " + to_string(stored.latent_norm) + " in the file but " +
                  to_string(cfg.latent_norm) + " in the model");
  }
  for (const auto& [name, entry] : file.tensors) {
    if (store.find(name) < 0 && !name.starts_with("optim.") && !name.starts_with("train.")) {
      throw IoError(where + ": unknown tensor '" + name + "'");
    }
  }
  for (const auto& e : store.entries()) {
    const auto it = file.tensors.find(e.name);
    if (it == file.tensors.end()) throw IoError(where + ": missing tensor '" + e.name + "'");
    if (it->second.dtype != DType::F32) {
      throw IoError(where + ": tensor '" + e.name + "' is " + dtype_name(it->second.dtype) + ", expected F32");
    }
    if (!(it->second.shape == e.shape)) {
      throw IoError(where + ": tensor '" + e.name + "' has shape " + it->second.shape.str() + ", expected " +
                    e.shape.str());
    }
  }
  // Every check passed: copy.
  for (std::int32_t i = 0; i < store.size(); ++i) {
    const auto& e = store.entries()[static_cast<std::size_t>(i)];
    const auto bytes = file.bytes(file.tensors.at(e.name));
    std::vector<float> f(static_cast<std::size_t>(e.shape.numel()));
    std::memcpy(f.data(), bytes.data(), bytes.size());
    std::vector<T> v(f.begin(), f.end());
    D::copy_from_host(store.value(i).data(), v.data(), v.size() * sizeof(T));
  }
}

/// Saves `model` to `path` (atomically), with optional optim./train. tensors beside it.
template <AttentionPolicy P, class T, Device D>
void save_model(const std::filesystem::path& path, const GPT<P, T, D>& model,
                std::span<const SafetensorsTensor> extra = {}) {
  save_checkpoint(path, model.config(), model.parameters(), extra);
}

/// Builds a GPT<P> from the checkpoint at `path`, with the checkpoint's config. IoError names
/// the file and the problem (unreadable, corrupt, another attention kind, a config P cannot
/// hold, a missing or misshapen tensor).
template <AttentionPolicy P, class T = float, Device D = Cpu>
std::unique_ptr<GPT<P, T, D>> load_model(const std::filesystem::path& path) {
  const std::string where = path.string();
  const SafetensorsFile file = read_safetensors(path);
  const ModelConfig cfg = checkpoint_config(file, where);
  if (cfg.attention != P::kind) {
    throw IoError(where + ": holds " + to_string(cfg.attention) + " attention, expected " + to_string(P::kind));
  }
  std::unique_ptr<GPT<P, T, D>> model;
  try {
    model = std::make_unique<GPT<P, T, D>>(cfg, 0);
  } catch (const ConfigError& e) {
    throw IoError(where + ": " + e.what());
  }
  load_parameters(file, where, model->config(), model->parameters());
  return model;
}

}  // namespace mla
