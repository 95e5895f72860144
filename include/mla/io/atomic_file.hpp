// mla/io/atomic_file.hpp — writing a file so that readers see the old one or the new one.
//
// The bytes go to a temporary file in the destination's folder, which is flushed (fsync) and
// renamed over the destination; the folder is then synced so the rename itself survives a
// crash. On any failure the temporary file is removed and the destination is untouched.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>

#include "mla/core/error.hpp"

namespace mla {

/// A file that could not be read, written or trusted.
class IoError : public Error {
 public:
  using Error::Error;
};

inline void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  // Appended, not "." + name: GCC 12 -O3 warns falsely (-Wrestrict, GCC bug 105329) on the latter.
  std::string name = ".";
  name.append(path.filename().string()).append(".tmp.XXXXXX");
  std::string tmp = (dir / name).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    throw IoError(path.string() + ": cannot create a file in its folder: " + std::strerror(errno));
  }
  // mkstemp makes the file private (0600); give it the mode a plain create would.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  int error = ::fchmod(fd, 0666 & ~mask) == 0 ? 0 : errno;
  const char* p = reinterpret_cast<const char*>(bytes.data());
  std::size_t left = bytes.size();
  while (error == 0 && left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) error = n < 0 ? errno : EIO;
    else { p += n; left -= static_cast<std::size_t>(n); }
  }
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(tmp.c_str());
    throw IoError(path.string() + ": write failed: " + std::strerror(error));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace mla
