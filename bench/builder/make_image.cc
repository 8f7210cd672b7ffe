// qufop_builder_bench_image DATA_DIR NAME:TAG DIR...: one gzip layer per DIR (bottom first), a
// minimal config, tagged NAME:TAG in DATA_DIR/builder/images — the multi-layer image that
// bench/builder/run pushes to a local registry and pulls back.
#include <cstdio>
#include <string>

#include "builder/builder.h"
#include "builder/fsutil.h"
#include "builder/layer.h"
#include "builder/oci.h"
#include "common/daemon.h"

int main(int argc, char** argv) {
  using namespace qufop::builder;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s DATA_DIR NAME:TAG DIR...\n", argv[0]);
    return 2;
  }
  std::string ref = argv[2];
  auto colon = ref.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "expected NAME:TAG\n");
    return 2;
  }
  std::string dir = images_dir(argv[1]);
  if (auto r = qufop::make_dirs(dir, 0755); !r) {
    std::fprintf(stderr, "%s\n", r.error().message.c_str());
    return 1;
  }
  auto store = OciStore::open(dir);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().message.c_str());
    return 1;
  }
  ImageConfig config;
  config.architecture = host_architecture();
  config.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  Manifest manifest;
  for (int i = 3; i < argc; ++i) {
    auto layer = make_layer(*store, argv[i]);
    if (!layer) {
      std::fprintf(stderr, "layer %s: %s\n", argv[i], layer.error().message.c_str());
      return 1;
    }
    config.diff_ids.push_back(layer->diff_id);
    manifest.layers.push_back(layer->blob);
  }
  auto cref = store->put_config(config);
  if (!cref) {
    std::fprintf(stderr, "%s\n", cref.error().message.c_str());
    return 1;
  }
  manifest.config = *cref;
  auto mref = store->put_manifest(manifest);
  if (!mref) {
    std::fprintf(stderr, "%s\n", mref.error().message.c_str());
    return 1;
  }
  if (auto r = store->tag(ref.substr(0, colon), ref.substr(colon + 1), *mref); !r) {
    std::fprintf(stderr, "%s\n", r.error().message.c_str());
    return 1;
  }
  std::printf("%s %s\n", ref.c_str(), mref->digest.c_str());
  return 0;
}
