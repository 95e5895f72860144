// mla/core/error.hpp — the typed exceptions every part of the library throws.
//
// A message always names the operation first ("matmul: ...") and then the offending shapes
// or values, so that one line on stderr tells a user what went wrong and where.
#pragma once

#include <stdexcept>
#include <string>

namespace mla {

/// Base of every error the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Tensor shapes that an operation cannot combine.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// An argument out of its allowed range (an embedding id >= vocab, a probability > 1, ...).
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// Misuse of the autodiff (backward from a non-scalar, mixing two tapes, ...).
class AutodiffError : public Error {
 public:
  using Error::Error;
};

/// A model configuration that the chosen attention policy cannot hold.
class ConfigError : public Error {
 public:
  using Error::Error;
};

}  // namespace mla
