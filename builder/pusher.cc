#include "builder/pusher.h"

#include <vector>

#include "common/http_client.h"

namespace qufop::builder {

namespace {

Error http_error(const std::string& what, const http::Response& res) {
  return Error{"unavailable",
               what + ": HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 512), 0};
}

}  // namespace

Result<std::string> upload_target(std::string_view location, std::string_view digest) {
  if (location.empty()) return Error::invalid("upload: the registry sent no Location");
  std::string target(location);
  if (auto scheme = target.find("://"); scheme != std::string::npos) {
    auto path = target.find('/', scheme + 3);
    target = path == std::string::npos ? "/" : target.substr(path);
  }
  if (target[0] != '/') return Error::invalid("upload: Location '" + std::string(location) + "'");
  if (auto hash = target.find('#'); hash != std::string::npos) target.resize(hash);
  char sep = '?';
  if (auto q = target.find('?'); q != std::string::npos) {
    sep = (q + 1 == target.size() || target.back() == '&') ? '\0' : '&';
  }
  if (sep != '\0') target += sep;
  // The digest's ':' is percent-encoded, as the distribution spec's examples do.
  target += "digest=sha256%3A" + std::string(digest.substr(7));
  return target;
}

Result<PushedImage> push_image(const OciStore& store, std::string_view local_ref,
                               const HostPort& registry, std::string_view name,
                               std::string_view tag, const PushOptions& options) {
  std::string what = "push " + std::string(local_ref) + " to " + registry.str() + "/" +
                     std::string(name) + ":" + std::string(tag);
  auto ref = store.resolve(local_ref);
  if (!ref) return ref.error().wrap(what);
  auto manifest_body = store.read_blob(ref->digest);
  if (!manifest_body) return manifest_body.error().wrap(what + ": manifest");
  auto manifest = parse_manifest(*manifest_body);
  if (!manifest) return manifest.error().wrap(what + ": manifest");
  std::string media_type = !ref->media_type.empty()        ? ref->media_type
                           : !manifest->media_type.empty() ? manifest->media_type
                                                           : std::string(kMediaManifest);
  std::vector<BlobRef> blobs = {manifest->config};
  blobs.insert(blobs.end(), manifest->layers.begin(), manifest->layers.end());

  http::ClientOptions co;
  co.request_timeout = options.timeout;
  co.max_body_bytes = 4u << 20;
  http::Client client(registry.host, registry.port, co);
  const std::string base = "/v2/" + std::string(name);
  PushedImage out;
  for (const auto& blob : blobs) {
    if (!valid_digest(blob.digest))
      return Error::invalid(what + ": blob digest '" + blob.digest + "'");
    http::Request head;
    head.method = "HEAD";
    head.target = base + "/blobs/" + blob.digest;
    auto h = client.send(head);
    if (!h) return h.error().wrap(what);
    if (h->status == 200) {
      ++out.blobs_present;
      continue;
    }
    if (h->status != 404) return http_error(what + ": HEAD blob " + blob.digest, *h);
    auto data = store.read_blob(blob.digest, options.max_blob_bytes);
    if (!data) return data.error().wrap(what + ": blob");
    auto start = client.post(base + "/blobs/uploads/", "", "application/octet-stream");
    if (!start) return start.error().wrap(what);
    if (start->status != 202) return http_error(what + ": start upload of " + blob.digest, *start);
    auto target = upload_target(start->header("Location"), blob.digest);
    if (!target) return target.error().wrap(what);
    http::Request put;
    put.method = "PUT";
    put.target = *target;
    put.headers = {{"Content-Type", "application/octet-stream"}};
    put.body = std::move(*data);
    auto done = client.send(put);
    if (!done) return done.error().wrap(what + ": upload " + blob.digest);
    if (done->status != 201) return http_error(what + ": upload " + blob.digest, *done);
    if (auto d = done->header("Docker-Content-Digest"); !d.empty() && d != blob.digest) {
      return Error::invalid(what + ": the registry stored " + blob.digest + " as " +
                            std::string(d));
    }
    ++out.blobs_uploaded;
    out.bytes_uploaded += put.body.size();
  }
  http::Request put;
  put.method = "PUT";
  put.target = base + "/manifests/" + std::string(tag);
  put.headers = {{"Content-Type", media_type}};
  put.body = *manifest_body;
  auto res = client.send(put);
  if (!res) return res.error().wrap(what + ": manifest");
  if (res->status != 201) return http_error(what + ": manifest", *res);
  if (auto d = res->header("Docker-Content-Digest"); !d.empty() && d != ref->digest) {
    return Error::invalid(what + ": the registry stored the manifest " + ref->digest + " as " +
                          std::string(d));
  }
  out.manifest = *ref;
  out.manifest.media_type = media_type;
  return out;
}

}  // namespace qufop::builder
