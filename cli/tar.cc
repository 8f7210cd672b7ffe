#include "cli/tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace qufop::cli {
namespace {

constexpr size_t kBlock = 512;

void put_octal(char* field, size_t width, uint64_t value) {
  // width-1 octal digits and a NUL, zero-padded, as ustar readers expect.
  std::string digits(width - 1, '0');
  for (size_t i = width - 1; i-- > 0 && value > 0; value >>= 3) {
    digits[i] = static_cast<char>('0' + (value & 7));
  }
  std::memcpy(field, digits.data(), width - 1);
  field[width - 1] = '\0';
}

void put_string(char* field, size_t width, std::string_view s) {
  std::memcpy(field, s.data(), std::min(width, s.size()));
}

void append_header(std::string& out, std::string_view name, char type, uint32_t mode, uint64_t size,
                   int64_t mtime, std::string_view link) {
  char h[kBlock] = {};
  put_string(h, 100, name);
  put_octal(h + 100, 8, mode & 07777);
  put_octal(h + 108, 8, 0);
  put_octal(h + 116, 8, 0);
  put_octal(h + 124, 12, size);
  put_octal(h + 136, 12, static_cast<uint64_t>(std::max<int64_t>(mtime, 0)));
  std::memset(h + 148, ' ', 8);
  h[156] = type;
  put_string(h + 157, 100, link);
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  put_octal(h + 148, 7, sum);
  h[155] = ' ';
  out.append(h, kBlock);
}

void pad(std::string& out) { out.append((kBlock - out.size() % kBlock) % kBlock, '\0'); }

// "<len> key=value\n" where len counts the whole record, itself included.
std::string pax_record(std::string_view key, std::string_view value) {
  size_t body = 1 + key.size() + 1 + value.size() + 1;
  size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + std::string(key) + "=" + std::string(value) + "\n";
}

void append_entry(std::string& out, const std::string& name, char type, uint32_t mode,
                  uint64_t size, int64_t mtime, const std::string& link) {
  if (name.size() > 100 || link.size() > 100) {
    std::string records;
    if (name.size() > 100) records += pax_record("path", name);
    if (link.size() > 100) records += pax_record("linkpath", link);
    append_header(out, "PaxHeader/" + name.substr(0, 80), 'x', 0644, records.size(), mtime, "");
    out += records;
    pad(out);
  }
  append_header(out, name, type, mode, size, mtime, link);
}

Result<void> append_file(std::string& out, const std::string& path, const std::string& name,
                         const struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Error::sys("open " + path, errno);
  append_entry(out, name, '0', st.st_mode, static_cast<uint64_t>(st.st_size), st.st_mtime, "");
  size_t start = out.size();
  out.resize(start + static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < static_cast<size_t>(st.st_size)) {
    ssize_t n = ::read(fd, out.data() + start + done, static_cast<size_t>(st.st_size) - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : 0;
      ::close(fd);
      if (err != 0) return Error::sys("read " + path, err);
      return Error::io("read " + path + ": the file shrank while being archived");
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  pad(out);
  return ok();
}

Result<void> append_tree(std::string& out, const std::string& dir, const std::string& prefix) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Error::sys("opendir " + dir, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string path = dir + "/" + n;
    std::string name = prefix + n;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return Error::sys("lstat " + path, errno);
    if (S_ISDIR(st.st_mode)) {
      append_entry(out, name + "/", '5', st.st_mode, 0, st.st_mtime, "");
      QF_TRY(append_tree(out, path, name + "/"));
    } else if (S_ISREG(st.st_mode)) {
      QF_TRY(append_file(out, path, name, st));
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t len = ::readlink(path.c_str(), target.data(), target.size());
      if (len < 0) return Error::sys("readlink " + path, errno);
      target.resize(static_cast<size_t>(len));
      append_entry(out, name, '2', 0777, 0, st.st_mtime, target);
    } else {
      return Error::invalid(path +
                            ": not a file, directory or symlink (device files, fifos and sockets "
                            "cannot be uploaded)");
    }
  }
  return ok();
}

}  // namespace

Result<std::string> tar_directory(const std::string& dir) {
  std::string out;
  QF_TRY(append_tree(out, dir, ""));
  out.append(2 * kBlock, '\0');  // the end-of-archive marker
  return out;
}

}  // namespace qufop::cli
