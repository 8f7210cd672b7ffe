// Helpers of the builder tests: archives made in the test with libarchive, small files.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace qufop::builder::testing {

struct TarItem {
  std::string name;
  char type = 'f';  // f file, d dir, l symlink, h hard link, c char dev, b block dev, p fifo
  std::string data;
  std::string link;  // symlink target or hard link target
  mode_t mode = 0644;
  int64_t size = -1;  // declared size; -1: data.size()
};

// Writes a tar (pax) or, with gzip, a tar.gz of the items to `path`.
void write_tar(const std::string& path, const std::vector<TarItem>& items, bool gzip = false);
void write_file(const std::string& path, const std::string& data);
std::string read_file(const std::string& path);
// A tar header for one regular file of `declared_size` bytes with no data after it, as a
// hostile client could write it (libarchive's writer pads the data to the size).
std::string raw_ustar_header(const std::string& name, uint64_t declared_size);

}  // namespace qufop::builder::testing
