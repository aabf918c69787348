// Why: see file_io.h.
#include "io/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace moetune {

FdGuard::~FdGuard() {
  if (fd >= 0) ::close(fd);
}

void write_all(int fd, const std::string& path, const void* data, size_t nbytes) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  while (nbytes > 0) {
    const ssize_t written = ::write(fd, bytes, nbytes);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) fail("cannot write '", path, "': ", std::strerror(errno));
    bytes += written;
    nbytes -= static_cast<size_t>(written);
  }
}

void pwrite_all(int fd, const std::string& path, const void* data, size_t nbytes, uint64_t offset) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  while (nbytes > 0) {
    const ssize_t written = ::pwrite(fd, bytes, nbytes, static_cast<off_t>(offset));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) fail("cannot write '", path, "' at byte ", offset, ": ", std::strerror(errno));
    bytes += written;
    offset += static_cast<uint64_t>(written);
    nbytes -= static_cast<size_t>(written);
  }
}

void sync_and_close(FdGuard& file, const std::string& path) {
  if (::fsync(file.fd) != 0) fail("cannot sync '", path, "': ", std::strerror(errno));
  if (::close(std::exchange(file.fd, -1)) != 0) fail("cannot close '", path, "': ", std::strerror(errno));
}

void fsync_path(const std::string& path) {
  const FdGuard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) fail("cannot open '", path, "' to sync it to disk: ", std::strerror(errno));
  if (::fsync(file.fd) != 0) fail("cannot sync '", path, "' to disk: ", std::strerror(errno));
}

}  // namespace moetune
