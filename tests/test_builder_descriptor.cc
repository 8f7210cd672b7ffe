#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "builder/descriptor.h"

namespace qufop::builder {
namespace {

using namespace std::chrono_literals;

std::string error_of(std::string_view text) {
  auto r = parse_descriptor(text);
  if (r) return "(parsed)";
  EXPECT_EQ(r.error().code, "invalid_argument");
  return r.error().message;
}

TEST(Descriptor, FullDescriptor) {
  auto d = parse_descriptor(R"(# a UFOP
image: registry.local:5000/team/base:1.2
build_script:
  - cp -r /src /app
  - chmod +x /app/ufop-demo
run: /app/ufop-demo -f "/app/my conf.toml" --name 'a b'
env:
  MODE: fast
  EMPTY: ""
  THREADS: 4
port: 9200
health: /health
cpu: 0.5
memory: 64m
stop_wait: 30s
warmup: 1m30s
readonly: true
)");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->image.name, "registry.local:5000/team/base");
  EXPECT_EQ(d->image.tag, "1.2");
  EXPECT_EQ(d->build_script,
            (std::vector<std::string>{"cp -r /src /app", "chmod +x /app/ufop-demo"}));
  EXPECT_EQ(d->run, (std::vector<std::string>{"/app/ufop-demo", "-f", "/app/my conf.toml", "--name",
                                              "a b"}));
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(d->env, (Env{{"MODE", "fast"}, {"EMPTY", ""}, {"THREADS", "4"}}));
  EXPECT_EQ(d->port, 9200);
  EXPECT_EQ(d->health, "/health");
  EXPECT_DOUBLE_EQ(d->cpu, 0.5);
  EXPECT_EQ(d->memory, 64u << 20);
  EXPECT_EQ(d->stop_wait, 30s);
  EXPECT_EQ(d->warmup, 90s);
  EXPECT_TRUE(d->readonly);
}

TEST(Descriptor, MinimalDescriptorGetsDefaults) {
  auto d = parse_descriptor("image: scratch\nrun: [/ufop, --serve]\n");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_TRUE(d->image.scratch);
  EXPECT_TRUE(d->build_script.empty());
  EXPECT_EQ(d->run, (std::vector<std::string>{"/ufop", "--serve"}));
  EXPECT_TRUE(d->env.empty());
  EXPECT_EQ(d->port, 9100);
  EXPECT_EQ(d->health, "");
  EXPECT_EQ(d->cpu, 0);
  EXPECT_EQ(d->memory, 0u);
  EXPECT_EQ(d->stop_wait, 10s);
  EXPECT_EQ(d->warmup, 0s);
  EXPECT_FALSE(d->readonly);
}

TEST(Descriptor, EnvAsList) {
  auto d = parse_descriptor("image: busybox\nrun: x\nenv:\n  - A=1\n  - B=x=y\n  - C=\n");
  ASSERT_TRUE(d) << d.error().message;
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(d->env, (Env{{"A", "1"}, {"B", "x=y"}, {"C", ""}}));
  EXPECT_EQ(d->image.str(), "busybox:latest");
}

TEST(Descriptor, UnknownKeyWithSuggestion) {
  EXPECT_EQ(error_of("image: busybox\nrun: x\nport: 80\n\n\n\nmemroy: 64m\n"),
            "ufop.yaml:7: key 'memroy': unknown key (did you mean 'memory'?)");
  EXPECT_EQ(error_of("image: busybox\nrun: x\nbuildscript: []\n"),
            "ufop.yaml:3: key 'buildscript': unknown key (did you mean 'build_script'?)");
  EXPECT_EQ(error_of("image: busybox\nrun: x\nreplicas: 3\n"),
            "ufop.yaml:3: key 'replicas': unknown key");
}

TEST(Descriptor, BadValuesNameLineAndKey) {
  const std::string head = "image: busybox\nrun: x\n";
  EXPECT_EQ(error_of("image: busybox\nrun: x\nport: 70000\n"),
            "ufop.yaml:3: key 'port': 70000 is not a port (1-65535)");
  EXPECT_EQ(error_of(head + "port: 0\n"), "ufop.yaml:3: key 'port': 0 is not a port (1-65535)");
  EXPECT_EQ(error_of(head + "port: http\n"),
            "ufop.yaml:3: key 'port': http is not a port (1-65535)");
  EXPECT_EQ(error_of(head + "health: health\n"),
            "ufop.yaml:3: key 'health': 'health' is not a path (start it with /)");
  EXPECT_EQ(error_of(head + "health: /a b\n"),
            "ufop.yaml:3: key 'health': '/a b' has blanks or control characters (percent-encode "
            "them)");
  EXPECT_EQ(error_of(head + "cpu: 0\n"),
            "ufop.yaml:3: key 'cpu': 0 is not a cpu count (more than 0, at most 64; such as 0.5)");
  EXPECT_EQ(error_of(head + "cpu: 65\n"),
            "ufop.yaml:3: key 'cpu': 65 is not a cpu count (more than 0, at most 64; such as "
            "0.5)");
  EXPECT_EQ(error_of(head + "cpu: -1\n"),
            "ufop.yaml:3: key 'cpu': -1 is not a cpu count (more than 0, at most 64; such as "
            "0.5)");
  EXPECT_EQ(error_of(head + "memory: 1m\n"),
            "ufop.yaml:3: key 'memory': 1m is less than the minimum, 4m");
  EXPECT_EQ(error_of(head + "memory: lots\n"),
            "ufop.yaml:3: key 'memory': 'lots' is not a size (such as 64m, 1g)");
  EXPECT_EQ(error_of(head + "memory: 64x\n"),
            "ufop.yaml:3: key 'memory': '64x' is not a size (units: k, m, g, t; such as 64m)");
  EXPECT_EQ(error_of(head + "stop_wait: 11m\n"),
            "ufop.yaml:3: key 'stop_wait': 11m is longer than the maximum, 10m");
  EXPECT_EQ(error_of(head + "stop_wait: 10\n"),
            "ufop.yaml:3: key 'stop_wait': '10' is not a duration (such as 10s, 500ms, 1m30s)");
  EXPECT_EQ(error_of(head + "warmup: soon\n"),
            "ufop.yaml:3: key 'warmup': 'soon' is not a duration (such as 10s, 500ms, 1m30s)");
  EXPECT_EQ(error_of(head + "readonly: yes\n"),
            "ufop.yaml:3: key 'readonly': yes is not true or false");
  EXPECT_EQ(error_of("image: Busybox\nrun: x\n"),
            "ufop.yaml:1: key 'image': image name 'Busybox' is not a name (lowercase letters and "
            "digits, separated by '.', '_', '__', '-' or '/')");
  EXPECT_EQ(error_of("image: busybox@sha256:abc\nrun: x\n"),
            "ufop.yaml:1: key 'image': digest 'sha256:abc' is not sha256:<64 lowercase hex "
            "digits>");
  EXPECT_EQ(error_of("image: busybox\nrun: /app/x | tee log\n"),
            "ufop.yaml:2: key 'run': unquoted '|': the command is not run by a shell (quote it, "
            "or write [\"/bin/sh\", \"-c\", \"...\"])");
  EXPECT_EQ(error_of("image: busybox\nrun: /app/x 'unterminated\n"),
            "ufop.yaml:2: key 'run': unterminated ' quote");
  EXPECT_EQ(error_of(head + "env:\n  PORT: 1\n"),
            "ufop.yaml:4: key 'env': PORT is set from 'port'; set 'port' instead");
  EXPECT_EQ(error_of(head + "env:\n  - A=1\n  - 9X=2\n"),
            "ufop.yaml:5: key 'env': '9X' is not a variable name (letters, digits, '_')");
  EXPECT_EQ(error_of(head + "env:\n  - A=1\n  - A=2\n"), "ufop.yaml:5: key 'env': A is set twice");
  EXPECT_EQ(error_of(head + "env:\n  - NOEQUALS\n"),
            "ufop.yaml:4: key 'env': item 1: expected K=V");
}

TEST(Descriptor, WrongTypes) {
  const std::string head = "image: busybox\nrun: x\n";
  EXPECT_EQ(error_of(head + "build_script: cp -r /src /app\n"),
            "ufop.yaml:3: key 'build_script': expected a list of shell commands, got a value");
  EXPECT_EQ(error_of(head + "build_script:\n  - make\n  - [a, b]\n"),
            "ufop.yaml:5: key 'build_script': item 2: expected a string, got a list");
  EXPECT_EQ(error_of("image: [busybox]\nrun: x\n"),
            "ufop.yaml:1: key 'image': expected a string, got a list");
  EXPECT_EQ(error_of("image: busybox\nrun:\n  cmd: x\n"),
            "ufop.yaml:3: key 'run': expected a string, got a map");
  EXPECT_EQ(error_of(head + "port: {a: 1}\n"),
            "ufop.yaml:3: key 'port': expected a port number, got a map");
  EXPECT_EQ(error_of(head + "env: FOO=1\n"),
            "ufop.yaml:3: key 'env': expected a map of NAME: value or a list of NAME=value, got "
            "a value");
  EXPECT_EQ(error_of(head + "env:\n  A: [1]\n"),
            "ufop.yaml:4: key 'env': A: expected a string, got a list (quote it; \"\" for empty)");
  EXPECT_EQ(error_of(head + "health:\n"), "ufop.yaml:3: key 'health': has no value");
  EXPECT_EQ(error_of("image: busybox\nrun: []\n"), "ufop.yaml:2: key 'run': the command is empty");
  EXPECT_EQ(error_of("image: busybox\nrun: \"\"\n"), "ufop.yaml:2: key 'run': must not be empty");
}

TEST(Descriptor, MissingRequiredKeys) {
  EXPECT_EQ(error_of("run: x\n"), "ufop.yaml: key 'image' is missing (the base image, or scratch)");
  EXPECT_EQ(error_of("image: busybox\n"),
            "ufop.yaml: key 'run' is missing (the command that starts the UFOP)");
}

TEST(Descriptor, MalformedYamlEmptyAndNonMap) {
  std::string e = error_of("image: busybox\nrun: x\nenv: [a, b\nport: 1\n");
  EXPECT_EQ(e.rfind("ufop.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find("malformed YAML: "), std::string::npos) << e;
  EXPECT_EQ(error_of("image: busybox\n  run: x\n"),
            "ufop.yaml:2: malformed YAML: illegal map value");
  EXPECT_EQ(error_of(""), "ufop.yaml: empty descriptor (it needs at least 'image' and 'run')");
  EXPECT_EQ(error_of("# only a comment\n"),
            "ufop.yaml: empty descriptor (it needs at least 'image' and 'run')");
  EXPECT_EQ(error_of("- image: busybox\n"),
            "ufop.yaml:1: expected a map of keys at the top level, got a list");
  EXPECT_EQ(error_of("just a string\n"),
            "ufop.yaml:1: expected a map of keys at the top level, got a value");
  EXPECT_EQ(error_of("image: busybox\nrun: x\n---\nimage: other\n"),
            "ufop.yaml:4: more than one YAML document (remove the second '---')");
  EXPECT_EQ(error_of("image: busybox\n[a]: 1\nrun: x\n"),
            "ufop.yaml:2: keys must be plain names, got a list");
}

TEST(Descriptor, ScratchHasNoShellForABuildScript) {
  EXPECT_EQ(error_of("image: scratch\nbuild_script:\n  - cp -r /src /app\nrun: /app/x\n"),
            "ufop.yaml:2: key 'build_script': the scratch image has no /bin/sh to run it (use a "
            "base image such as busybox, or drop build_script)");
  EXPECT_EQ(error_of("image: scratch\nbuild_script: []\nrun: /app/x\n"), "(parsed)");
}

TEST(Descriptor, DuplicateKeys) {
  EXPECT_EQ(error_of("image: busybox\nrun: x\nport: 1\nport: 2\n"),
            "ufop.yaml:4: key 'port': set twice (first on line 3)");
}

TEST(Descriptor, FileNameInErrors) {
  auto r = parse_descriptor("run: x\n", "demo/ufop.yaml");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.rfind("demo/ufop.yaml: ", 0), 0u);
}

TEST(Descriptor, ExamplesOfTheReferenceParse) {
  std::ifstream in(std::string(QUFOP_SOURCE_DIR) + "/vendor-docs/ufop-yaml.md");
  ASSERT_TRUE(in) << "vendor-docs/ufop-yaml.md";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  int examples = 0;
  for (size_t at = doc.find("```yaml\n"); at != std::string::npos;
       at = doc.find("```yaml\n", at + 1)) {
    size_t start = at + 8;
    std::string block = doc.substr(start, doc.find("```", start) - start);
    auto d = parse_descriptor(block);
    EXPECT_TRUE(d) << block << "\n" << d.error().message;
    ++examples;
  }
  EXPECT_EQ(examples, 2);
}

TEST(ImageRef, Forms) {
  auto r = parse_image_ref("busybox");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->str(), "busybox:latest");
  const std::string hex(64, 'a');
  r = parse_image_ref("team/base@sha256:" + hex);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->name, "team/base");
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->digest, "sha256:" + hex);
  r = parse_image_ref("localhost:5000/a/b:v1.0-rc_1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->name, "localhost:5000/a/b");
  EXPECT_EQ(r->tag, "v1.0-rc_1");
  EXPECT_FALSE(parse_image_ref("a//b"));
  EXPECT_FALSE(parse_image_ref("a:"));
  EXPECT_FALSE(parse_image_ref(":tag"));
  EXPECT_FALSE(parse_image_ref("a:-x"));
  EXPECT_FALSE(parse_image_ref("bad host:5000/a"));
}

TEST(SplitCommand, ShellLikeQuoting) {
  using V = std::vector<std::string>;
  EXPECT_EQ(*split_command("  a  b\tc "), (V{"a", "b", "c"}));
  EXPECT_EQ(*split_command(R"(a 'b c' "d \"e\" \$f" g\ h '' "")"),
            (V{"a", "b c", "d \"e\" $f", "g h", "", ""}));
  EXPECT_EQ(*split_command(R"("a\nb" x#y)"), (V{"a\\nb", "x#y"}));
  EXPECT_EQ(*split_command("'$HOME' \"|\""), (V{"$HOME", "|"}));
  EXPECT_FALSE(split_command("a \"b"));
  EXPECT_FALSE(split_command("a\\"));
  EXPECT_FALSE(split_command("a $HOME"));
  EXPECT_FALSE(split_command("a; b"));
  EXPECT_FALSE(split_command("a # comment"));
  EXPECT_TRUE(split_command("")->empty());
}

TEST(ParseSize, Units) {
  EXPECT_EQ(*parse_size("4194304"), 4194304u);
  EXPECT_EQ(*parse_size("64m"), 64u << 20);
  EXPECT_EQ(*parse_size("64MiB"), 64u << 20);
  EXPECT_EQ(*parse_size("1G"), 1u << 30);
  EXPECT_EQ(*parse_size("2gb"), 2ull << 30);
  EXPECT_EQ(*parse_size("512k"), 512u << 10);
  EXPECT_FALSE(parse_size("1.5g"));
  EXPECT_FALSE(parse_size("99999999999999999999"));
  EXPECT_FALSE(parse_size("18446744073709551615t"));
  EXPECT_FALSE(parse_size(""));
}

TEST(ParseDuration, Units) {
  EXPECT_EQ(*parse_duration("10s"), 10s);
  EXPECT_EQ(*parse_duration("500ms"), 500ms);
  EXPECT_EQ(*parse_duration("1m30s"), 90s);
  EXPECT_EQ(*parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(*parse_duration("2h"), 7200s);
  EXPECT_FALSE(parse_duration("10"));
  EXPECT_FALSE(parse_duration("s"));
  EXPECT_FALSE(parse_duration("1d"));
  EXPECT_FALSE(parse_duration("1..2s"));
}

TEST(Suggest, EditDistance) {
  std::vector<std::string_view> keys = {"memory", "port", "image"};
  EXPECT_EQ(suggest("memroy", keys), "memory");
  EXPECT_EQ(suggest("Port", keys), "port");
  EXPECT_EQ(suggest("imaeg", keys), "image");
  EXPECT_EQ(suggest("replicas", keys), "");
}

}  // namespace
}  // namespace qufop::builder
