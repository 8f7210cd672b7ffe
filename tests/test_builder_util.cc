#include "tests/test_builder_util.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace qufop::builder::testing {

void write_tar(const std::string& path, const std::vector<TarItem>& items, bool gzip) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_write_new(), archive_write_free);
  ASSERT_EQ(archive_write_set_format_pax_restricted(a.get()), ARCHIVE_OK);
  if (gzip) {
    ASSERT_EQ(archive_write_add_filter_gzip(a.get()), ARCHIVE_OK);
  }
  ASSERT_EQ(archive_write_open_filename(a.get(), path.c_str()), ARCHIVE_OK);
  for (const auto& it : items) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                               archive_entry_free);
    archive_entry_set_pathname(e.get(), it.name.c_str());
    archive_entry_set_perm(e.get(), it.mode);
    archive_entry_set_mtime(e.get(), 1700000000, 0);
    int64_t size = it.size >= 0 ? it.size : static_cast<int64_t>(it.data.size());
    switch (it.type) {
      case 'f':
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_size(e.get(), size);
        break;
      case 'd':
        archive_entry_set_filetype(e.get(), AE_IFDIR);
        break;
      case 'l':
        archive_entry_set_filetype(e.get(), AE_IFLNK);
        archive_entry_set_symlink(e.get(), it.link.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_hardlink(e.get(), it.link.c_str());
        break;
      case 'c':
        archive_entry_set_filetype(e.get(), AE_IFCHR);
        archive_entry_set_rdev(e.get(), makedev(1, 3));
        break;
      case 'b':
        archive_entry_set_filetype(e.get(), AE_IFBLK);
        archive_entry_set_rdev(e.get(), makedev(8, 0));
        break;
      case 'p':
        archive_entry_set_filetype(e.get(), AE_IFIFO);
        break;
      default:
        FAIL() << "bad type " << it.type;
    }
    ASSERT_GE(archive_write_header(a.get(), e.get()), ARCHIVE_WARN)
        << archive_error_string(a.get());
    if (it.type == 'f' && !it.data.empty()) {
      ASSERT_EQ(archive_write_data(a.get(), it.data.data(), it.data.size()),
                static_cast<la_ssize_t>(it.data.size()));
    }
  }
  ASSERT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string raw_ustar_header(const std::string& name, uint64_t declared_size) {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(declared_size));
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  h[156] = '0';
  std::memcpy(h.data() + 257, "ustar", 6);
  std::memcpy(h.data() + 263, "00", 2);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

}  // namespace qufop::builder::testing
