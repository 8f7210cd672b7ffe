#include "builder/import.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <memory>

#include "builder/descriptor.h"
#include "builder/extract.h"
#include "builder/layer.h"

namespace qufop::builder {

namespace fs = std::filesystem;

namespace {

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

// Copies one blob of the source layout into the store, its digest checked on the way in.
Result<void> copy_blob(const OciStore& from, const OciStore& to, std::string_view digest) {
  if (to.has_blob(digest)) return ok();
  auto fd = from.open_blob(digest);
  if (!fd) return fd.error().wrap("blob " + std::string(digest));
  int in = fd->get();
  auto put = to.put_blob(
      [in](char* buf, size_t len) -> Result<size_t> {
        for (;;) {
          ssize_t n = ::read(in, buf, len);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return Error::sys("read(blob)", errno);
          return static_cast<size_t>(n);
        }
      },
      digest);
  if (!put) return put.error().wrap("blob " + std::string(digest));
  return ok();
}

}  // namespace

Result<bool> is_oci_archive(const fs::path& tarball) {
  ArchivePtr r(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(r.get());
  archive_read_support_filter_all(r.get());
  if (archive_read_open_filename(r.get(), tarball.c_str(), 256 << 10) != ARCHIVE_OK) {
    return Error::invalid(tarball.string() + ": " + archive_error_string(r.get()));
  }
  archive_entry* e = nullptr;
  while (archive_read_next_header(r.get(), &e) == ARCHIVE_OK) {
    std::string_view name = archive_entry_pathname(e);
    if (name.starts_with("./")) name.remove_prefix(2);
    if (name == "oci-layout") return true;
  }
  return false;
}

Result<BlobRef> import_oci_archive(const OciStore& store, std::string_view ref_text,
                                   const fs::path& tarball, const fs::path& tmp_dir) {
  auto ref = parse_image_ref(ref_text);
  if (!ref) return ref.error().wrap("import");
  if (ref->scratch || !ref->digest.empty()) {
    return Error::invalid("import: name the image NAME[:TAG], not '" + std::string(ref_text) + "'");
  }
  std::error_code ec;
  fs::create_directories(tmp_dir, ec);
  std::string dir = (tmp_dir / "oci-XXXXXX").string();
  if (!::mkdtemp(dir.data())) return Error::sys("mkdtemp(" + dir + ")", errno);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};
  std::string layout = dir + "/layout";  // extract_upload makes the destination itself
  if (auto x = extract_upload(tarball, layout); !x) {
    return Error::invalid("OCI archive: " + x.error().message);
  }
  auto source = OciStore::open(layout);
  if (!source) return source.error().wrap("OCI archive");
  auto images = source->list();
  if (!images) return images.error().wrap("OCI archive");
  // The archive's image named with the wanted tag, else its only one (skopeo names it by the
  // reference it was copied as; an unnamed one has an empty tag).
  const TaggedImage* chosen = nullptr;
  for (const auto& i : *images) {
    if (i.tag == ref->tag) chosen = &i;
  }
  if (!chosen && images->size() == 1) chosen = &images->front();
  if (!chosen) {
    return Error::invalid("OCI archive: " + std::to_string(images->size()) +
                          " images in the archive and none tagged '" + ref->tag + "'");
  }
  if (is_index_media_type(chosen->manifest.media_type)) {
    return Error::invalid(
        "OCI archive: a multi-platform image index; copy one platform's image "
        "(skopeo copy --override-arch ...)");
  }
  auto manifest = source->read_manifest(chosen->manifest.digest);
  if (!manifest) return manifest.error().wrap("OCI archive");
  QF_TRY(copy_blob(*source, store, manifest->config.digest));
  for (const auto& layer : manifest->layers) QF_TRY(copy_blob(*source, store, layer.digest));
  QF_TRY(copy_blob(*source, store, chosen->manifest.digest));
  QF_TRY(store.tag(ref->name, ref->tag, chosen->manifest));
  return chosen->manifest;
}

Result<BlobRef> import_image(const OciStore& store, std::string_view ref, const fs::path& tarball,
                             const fs::path& tmp_dir) {
  auto oci = is_oci_archive(tarball);
  if (!oci) return oci.error();
  if (*oci) return import_oci_archive(store, ref, tarball, tmp_dir);
  return import_rootfs_tarball(store, ref, tarball);
}

}  // namespace qufop::builder
