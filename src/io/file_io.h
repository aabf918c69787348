// Why: the writers of checkpoint files (io/safetensors.h, io/checkpoint_writer.h) need the same few POSIX calls done
// the careful way — a descriptor closed on every path out, writes repeated until every byte is out (a write may be
// short or interrupted), fsync checked — with errors that name the file. They live here once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moetune {

// Closes a file descriptor on every path out of a scope (-1: none).
struct FdGuard {
  int fd = -1;
  ~FdGuard();
};

// Writes all `nbytes` at the file position / at byte `offset` (pwrite). Throws Error naming `path`.
void write_all(int fd, const std::string& path, const void* data, size_t nbytes);
void pwrite_all(int fd, const std::string& path, const void* data, size_t nbytes, uint64_t offset);

// fsync then close of a file written through `file` (left at -1, so the guard does not close it again). Throws Error
// naming `path`.
void sync_and_close(FdGuard& file, const std::string& path);

// fsync of a file or a folder by its path (a folder: so that the names created or renamed in it are durable). Throws
// Error naming `path`.
void fsync_path(const std::string& path);

}  // namespace moetune
