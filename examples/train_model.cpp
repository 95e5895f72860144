// train_model — trains a GPT with the chosen attention on an llm.c token file (docs/design.md §6, §7).
//
//   train_model --train FILE.bin --out DIR [--val FILE.bin] [--attn mha|gqa|mqa|mla]
//               [--rope none|full|decoupled] [model sizes] [--seq-len T] [--batch B] [--steps N]
//               [--stop-after K] [--save-every K] [--lr X] [--seed S] [--threads N] [--resume DIR]
//               [--init-from CHECKPOINT] [--device cpu|cuda]
//   (`train_model --help` lists every flag with its default.)
//
// Each step draws B windows of T tokens per micro-batch at seeded random positions
// (mla/train/batches.hpp: a hash of (seed, step, micro, row)), runs --accum micro-batches
// whose loss gradients are each seeded with 1/accum (so the accumulated gradient is that of
// the mean loss), clips the gradient norm to --grad-clip, and takes one AdamW step with the
// cosine schedule (linear warmup over --warmup steps, floor 0.1 x --lr at --steps). Dropout
// masks are seeded per (step, micro-batch). A step whose loss or gradient norm is not finite
// is skipped and counted; --max-bad-steps in a row stop the run with an error.
//
// DIR gets, each written atomically:
//   model.safetensors  the model (§5) with the optimizer and progress (mla/train/train_state.hpp),
//                      at every --save-every steps, at --stop-after and at the end
//   run.json           every setting, so that --resume DIR continues the same run
//   metrics.csv        step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s (one row a step;
//                      appended and flushed; val_loss empty where not evaluated)
//   loss.png           train and validation loss against tokens (gnuplot, when installed)
// --resume DIR continues up to --steps; with the same thread count, the final checkpoint has
// the same bytes as a run that never stopped. Only --steps, --stop-after, --save-every,
// --threads and --out may change on resume; any other flag must match the run or be left out.
// --init-from CHECKPOINT starts from that checkpoint's weights, with its model (no model flags
// may be given) and a fresh optimizer and schedule: fine-tuning, e.g. after convert_to_mla.
// --device cuda trains on the GPU (a build with the CUDA backend). A checkpoint has the same
// format on either device (its values agree to float rounding), so a run may resume on the
// other one; --device is not a setting of the run (run.json does not hold it): give it each time.
//
// `mpirun -np N train_model ...` (a build with MPI) trains data-parallel on N CPU processes:
// each step takes N x --accum micro-batches of --batch windows, rank r the r-th of every N
// (common/train_run.hpp); rank 0 alone prints and writes DIR. Every rank must be given the same
// flags but --threads, and see the same files (token files; on --resume the run's folder).
// A run resumes under the same N only (run.json's "processes").
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <variant>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mla/mla.hpp>

#include "common/cli.hpp"
#include "common/device.hpp"
#include "common/job.hpp"
#include "common/train_run.hpp"
#include "common/train_settings.hpp"
#include "common/variants.hpp"

int main(int argc, char** argv) {
  using namespace examples::training;  // Settings, Run, kFields, train, ...
  using examples::Stopped;
  std::optional<examples::Job> joined;  // this process, or the ranks of an MPI job
  try {
    joined.emplace(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "train_model: " << e.what() << "\n";
    return 1;
  }
  examples::Job& job = *joined;

  CLI::App app{"Trains a GPT with MHA, GQA, MQA or MLA attention on an llm.c token file."};
  Settings cli;
  std::string out, resume;
  std::int64_t stop_after = 0;
  for (const Field& f : kFields) {
    std::visit([&](auto m) { app.add_option(f.flag, cli.*m, f.help)->capture_default_str(); }, f.member);
  }
  app.add_option("--out", out, "output folder (default with --resume: the resumed folder)");
  app.add_option("--stop-after", stop_after, "stop (and save) after step K, to --resume later");
  app.add_option("--resume", resume, "continue the run saved in this folder");
  std::string device = "cpu";
  app.add_option("--device", device, "where the model trains: cpu, or cuda (a GPU; needs the CUDA backend)")
      ->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  std::optional<examples::Stop> parsed;  // set when the command line ends the program
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    parsed = examples::Stop{job.leader() ? app.exit(e) : 0, ""};
  } catch (const CLI::ParseError& e) {
    parsed = examples::Stop{2, e.what()};
  }

  try {
    Run run{.s = cli, .out = out, .resume = resume, .stop_after = stop_after};
    job.agree_on([&] {
      if (parsed) throw Stopped(parsed->status, parsed->message);
      if (device == "cuda") {
        if (job.size() > 1) fail("--device cuda: data-parallel training runs on the CPU backend only");
        try {
          const std::string name = examples::require_cuda();  // before anything is read or written
          std::cout << "train_model: device cuda (" << name << ")\n";
        } catch (const examples::DeviceUnavailable& e) {
          throw Stopped(e.status(), std::string("--device cuda: ") + e.what());
        }
      }
      if (stop_after < 0) fail("--stop-after must not be negative");
      for (std::string* path : {&cli.train, &cli.val, &cli.init_from}) {
        if (!path->empty()) *path = fs::absolute(*path).string();
      }
      run.s = cli;
      if (!resume.empty()) {
        // The saved run's settings; flags given now may change only what does not alter the run.
        const fs::path saved_json = fs::path(resume) / "run.json";
        if (!fs::exists(fs::path(resume) / "model.safetensors")) fail("--resume " + resume + ": no model.safetensors there");
        if (!fs::exists(saved_json)) fail("--resume " + resume + ": no run.json there");
        const auto j = nlohmann::json::parse(read_text(saved_json), nullptr, false);
        if (j.is_discarded() || !j.is_object()) fail(saved_json.string() + ": not a JSON object");
        run.s = from_json(j, saved_json.string());
        for (const Field& f : kFields) {
          if (app.count(f.flag) == 0) continue;
          if (f.resume_may_change) {
            std::visit([&](auto m) { run.s.*m = cli.*m; }, f.member);
          } else if (std::visit([&](auto m) { return cli.*m != run.s.*m; }, f.member)) {
            fail(std::string(f.flag) + " " + flag_value(cli, f) + " differs from the resumed run's " + flag_value(run.s, f) +
                 " (only --steps, --stop-after, --save-every, --threads and --out may change)");
          }
        }
        if (run.s.processes != job.size()) {
          fail("--resume " + resume + ": the run was trained by " + std::to_string(run.s.processes) +
               " processes; resume it with " +
               (run.s.processes > 1 ? "mpirun -np " + std::to_string(run.s.processes) : std::string("one process")) +
               " (this job has " + std::to_string(job.size()) + ")");
        }
        if (out.empty()) run.out = resume;
      } else {
        if (cli.train.empty()) fail("--train is required");
        if (out.empty()) fail("--out is required");
        if (!cli.init_from.empty()) {
          for (const char* flag : kModelFlags) {
            if (app.count(flag) > 0) fail(std::string(flag) + ": the model comes from --init-from " + cli.init_from);
          }
          take_model_from(run.s, examples::read_checkpoint_config(run.s.init_from));
        }
        run.s.processes = job.size();
      }
      resolve(run.s);
    });
    if (device == "cuda") return train_on_cuda(run, job);
    return examples::with_policy(run.s.attn, run.s.rope, [&]<class P>() { return train<P, mla::Cpu>(run, job); });
  } catch (const Stopped& e) {  // every rank stops together; the first prints
    if (job.leader() && !e.line().empty()) std::cerr << "train_model: " << e.line() << "\n";
    return e.status();
  } catch (const std::exception& e) {  // this rank alone: the others cannot go on without it
    std::cerr << "train_model: " << job.who(job.rank()) << e.what() << "\n";
    if (job.size() > 1) job.abort(1);
    return 1;
  }
}
