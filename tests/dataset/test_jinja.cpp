// Why: the chat template interpreter must print exactly what Transformers' Jinja environment prints, down to each space
// and newline, or the fine-tuning data differs from what the model saw. tests/fixtures/chat/jinja_cases.json holds
// small templates rendered by Transformers itself (tools/dataset/make_chat_fixtures.py): whitespace control, scoping,
// Python value printing, filters, tests, methods, and templates that must fail. Unit cases below pin the error messages
// (template name and line) and the generation-span bookkeeping.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "dataset/jinja.h"

namespace moetune {
namespace {

using jinja::Template;
using jinja::Value;

std::string fixture_path(const std::string& name) {
  return std::string(MOETUNE_SOURCE_DIR) + "/tests/fixtures/chat/" + name;
}

nlohmann::ordered_json read_fixture(const std::string& name) {
  std::ifstream in(fixture_path(name));
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::ordered_json::parse(text.str());
}

std::string render(const std::string& source, const nlohmann::ordered_json& variables = nlohmann::ordered_json::object()) {
  return Template::parse(source, "test").render(Value::from_json(variables));
}

std::string error_of(const std::string& source, const nlohmann::ordered_json& variables = nlohmann::ordered_json::object()) {
  try {
    render(source, variables);
  } catch (const jinja::TemplateError& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(JinjaConformance, TransformersRendersTheSame) {
  const nlohmann::ordered_json cases = read_fixture("jinja_cases.json");
  ASSERT_GT(cases.size(), 50u);
  for (const auto& c : cases) {
    const std::string source = c["template"].get<std::string>();
    SCOPED_TRACE(source);
    if (c.contains("error")) {
      EXPECT_THROW(render(source, c["variables"]), jinja::TemplateError) << "Transformers: " << c["error"];
      continue;
    }
    try {
      EXPECT_EQ(render(source, c["variables"]), c["output"].get<std::string>());
    } catch (const std::exception& error) {
      ADD_FAILURE() << "threw: " << error.what() << "\nexpected: " << c["output"];
    }
  }
}

TEST(JinjaErrors, ParseErrorsNameTheTemplateAndLine) {
  EXPECT_EQ(error_of("line one\n{% if x %}\n{% include 'a' %}\n{% endif %}"), "test:3: unsupported statement 'include'");
  EXPECT_EQ(error_of("{{ x | nosuch }}"), "test:1: unsupported filter 'nosuch'");
  EXPECT_EQ(error_of("a\n\n{{ x is nosuch }}"), "test:3: unsupported test 'nosuch'");
  EXPECT_EQ(error_of("{% for x in y %}"), "test:1: unexpected end of template, expected else or endfor");
  EXPECT_EQ(error_of("\n{% endfor %}"), "test:2: unexpected 'endfor' (no open block it could close)");
  EXPECT_EQ(error_of("{{ 'abc }}"), "test:1: string literal is not closed");
  EXPECT_EQ(error_of("{% break %}"), "test:1: 'break' outside of a for loop");
  EXPECT_EQ(error_of("a\xff"), "test: the template is not valid UTF-8");
  EXPECT_EQ(error_of("{% raw %}x{% endraw %}"), "test:1: unsupported statement 'raw'");
}

TEST(JinjaErrors, RuntimeErrorsNameTheLine) {
  EXPECT_EQ(error_of("ok\n{{ 'a' + 1 }}"), "test:2: can only concatenate str (not \"int\") to str");
  EXPECT_EQ(error_of("{{ x.y.z }}", {{"x", nlohmann::ordered_json::object()}}),
            "test:1: 'dict object' has no attribute 'y'");
  EXPECT_EQ(error_of("\n\n{{ raise_exception('roles must alternate') }}"), "test:3: raise_exception: roles must alternate");
  try {
    render("{{ raise_exception('no') }}");
    ADD_FAILURE();
  } catch (const jinja::RaisedError&) {
  }
}

TEST(JinjaGeneration, SpansCoverTheBlockOutput) {
  const Template t = Template::parse("A{% for m in ms %}<{% generation %}{{ m }}!{% endgeneration %}>{% endfor %}Z", "g");
  EXPECT_TRUE(t.has_generation_blocks());
  std::vector<jinja::GenerationSpan> spans;
  const std::string out = t.render(Value::from_json({{"ms", {"xy", "é"}}}), &spans);
  EXPECT_EQ(out, "A<xy!><é!>Z");
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(out.substr(spans[0].begin, spans[0].end - spans[0].begin), "xy!");
  EXPECT_EQ(out.substr(spans[1].begin, spans[1].end - spans[1].begin), "é!");
  EXPECT_FALSE(Template::parse("{{ 1 }}", "n").has_generation_blocks());
}

TEST(JinjaValues, PythonReprAndJson) {
  EXPECT_EQ(Value::number(1e-5).str(), "1e-05");
  EXPECT_EQ(Value::number(123456789.0).str(), "123456789.0");
  EXPECT_EQ(Value::number(1e16).str(), "1e+16");
  EXPECT_EQ(Value::number(0.1).str(), "0.1");
  EXPECT_EQ(Value::number(-2.5e-7).str(), "-2.5e-07");
  EXPECT_EQ(Value::string("it's").repr(), "\"it's\"");
  EXPECT_EQ(Value::string("a\nb\\").repr(), "'a\\nb\\\\'");
  EXPECT_EQ(Value::from_json({{"b", 1}, {"a", {1.5, nullptr, "é"}}}).to_json(), "{\"b\": 1, \"a\": [1.5, null, \"é\"]}");
}

TEST(JinjaValues, ParsedTemplatesAreReusableAndThreadSafe) {
  const Template t = Template::parse("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}"
                                     "{{ ns.n }}",
                                     "sum");
  std::vector<std::thread> threads;
  std::vector<std::string> out(4);
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] { out[i] = t.render(Value::from_json({{"xs", {i, 10, 100}}})); });
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], std::to_string(110 + i));
}

}  // namespace
}  // namespace moetune
