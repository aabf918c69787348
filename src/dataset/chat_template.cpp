// Why: see chat_template.h.
#include "dataset/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tokenizer/tokenizer.h"

namespace moetune {

namespace fs = std::filesystem;
using jinja::Value;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open for reading");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

nlohmann::ordered_json read_json_file(const std::string& path) {
  try {
    return nlohmann::ordered_json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& error) {
    fail(path, ": malformed JSON (", error.what(), ")");
  }
}

constexpr const char* kProbeUser = "moetune-probe-user-6f1d";
constexpr const char* kProbeAssistant = "moetune-probe-assistant-6f1d";

}  // namespace

bool ChatTemplate::folder_has_template(const std::string& folder) {
  if (fs::exists(fs::path(folder) / "chat_template.jinja")) return true;
  const fs::path config = fs::path(folder) / "tokenizer_config.json";
  if (!fs::exists(config)) return false;
  const nlohmann::ordered_json json = read_json_file(config.string());
  return json.is_object() && json.contains("chat_template") && !json["chat_template"].is_null();
}

ChatTemplate ChatTemplate::from_folder(const std::string& folder) {
  const fs::path config_path = fs::path(folder) / "tokenizer_config.json";
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (fs::exists(config_path)) config = read_json_file(config_path.string());
  if (!config.is_object()) fail(config_path.string(), ": not a JSON object");

  std::string source, name;
  const fs::path jinja_path = fs::path(folder) / "chat_template.jinja";
  if (fs::exists(jinja_path)) {
    source = read_file(jinja_path.string());
    name = jinja_path.string();
  } else if (config.contains("chat_template") && config["chat_template"].is_string()) {
    source = config["chat_template"].get<std::string>();
    name = config_path.string() + " chat_template";
  } else if (config.contains("chat_template") && config["chat_template"].is_array()) {
    for (const auto& entry : config["chat_template"])
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        source = entry["template"].get<std::string>();
    if (source.empty())
      fail(config_path.string(), ": \"chat_template\" is a list without a {\"name\": \"default\"} template");
    name = config_path.string() + " chat_template[default]";
  } else {
    fail(folder, ": no chat template (neither chat_template.jinja nor \"chat_template\" in tokenizer_config.json); "
         "chat data needs one");
  }

  // The special tokens as Transformers' tokenizer holds them (defaults and special_tokens_map.json included).
  nlohmann::ordered_json special = nlohmann::ordered_json::object();
  for (const auto& [key, content] : Tokenizer::special_tokens_in_folder(folder)) special[key] = content;

  // The added tokens of tokenizer.json, or of the tokenizer a tokenizer.model converts to.
  std::vector<std::string> added;
  nlohmann::ordered_json tokenizer;
  try {
    tokenizer = nlohmann::ordered_json::parse(Tokenizer::json_in_folder(folder));
  } catch (const nlohmann::json::parse_error& error) {
    fail(Tokenizer::file_in_folder(folder), ": malformed JSON (", error.what(), ")");
  }
  if (tokenizer.is_object() && tokenizer.contains("added_tokens") && tokenizer["added_tokens"].is_array())
    for (const auto& token : tokenizer["added_tokens"])
      if (token.is_object() && token.contains("content") && token["content"].is_string())
        added.push_back(token["content"].get<std::string>());
  return ChatTemplate(std::move(source), std::move(name), std::move(special), std::move(added));
}

ChatTemplate::ChatTemplate(std::string source, std::string name, nlohmann::ordered_json special_tokens,
                           std::vector<std::string> added_tokens)
    : source_(std::move(source)),
      template_(jinja::Template::parse(source_, std::move(name))),
      special_tokens_(std::move(special_tokens)) {
  if (!template_.has_generation_blocks()) end_of_turn_ = find_end_of_turn(added_tokens);
}

Value ChatTemplate::variables(const Value& messages, const Value& tools, bool add_generation_prompt,
                              const Value& kwargs) const {
  auto vars = std::make_shared<jinja::Dict>();
  vars->set(Value::string("messages"), messages);
  vars->set(Value::string("tools"), tools.is_undefined() ? Value::none() : tools);
  vars->set(Value::string("documents"), Value::none());
  vars->set(Value::string("add_generation_prompt"), Value::boolean(add_generation_prompt));
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it)
    vars->set(Value::string(it.key()), Value::string(it.value().get<std::string>()));
  if (kwargs.is_dict())
    for (const auto& [key, value] : kwargs.as_dict().items) vars->set(key, value);
  return Value::dict(std::move(vars));
}

std::string ChatTemplate::render(const Value& messages, const Value& tools, bool add_generation_prompt,
                                 const Value& kwargs, std::vector<jinja::GenerationSpan>* spans) const {
  try {
    return template_.render(variables(messages, tools, add_generation_prompt, kwargs), spans);
  } catch (const jinja::TemplateError& error) {
    throw ChatError(error.what());
  }
}

std::string ChatTemplate::find_end_of_turn(const std::vector<std::string>& added_tokens) {
  auto make = [](const char* role, const char* content) {
    auto message = std::make_shared<jinja::Dict>();
    message->set(Value::string("role"), Value::string(role));
    message->set(Value::string("content"), Value::string(content));
    return Value::dict(std::move(message));
  };
  const Value probe = Value::list({make("user", kProbeUser), make("assistant", kProbeAssistant)});
  std::string text;
  try {
    text = template_.render(variables(probe, Value(), false, Value()));
  } catch (const jinja::TemplateError& error) {
    end_of_turn_problem_ = str("rendering a one-turn probe conversation failed: ", error.what());
    return "";
  }
  const size_t at = text.find(kProbeAssistant);
  if (at == std::string::npos) {
    end_of_turn_problem_ = "a probe conversation's assistant content does not appear in the rendered text";
    return "";
  }
  // The first added token after the content, past any whitespace the template puts in between (Llama-2: " </s>").
  std::string after = text.substr(at + std::string(kProbeAssistant).size());
  const size_t first = after.find_first_not_of(" \t\r\n");
  after = after.substr(first == std::string::npos ? after.size() : first);
  std::string best;
  for (const std::string& token : added_tokens)
    if (!token.empty() && token.size() > best.size() && after.compare(0, token.size(), token) == 0) best = token;
  if (best.empty())
    end_of_turn_problem_ = str("the template writes no added token right after an assistant message (it writes ",
                               nlohmann::json(after.substr(0, 20)).dump(), ")");
  return best;
}

void ChatTemplate::check_trainable() const {
  if (!template_.has_generation_blocks() && end_of_turn_.empty())
    throw ChatError(str(name(), ": cannot tell where an assistant turn ends (", end_of_turn_problem_,
                        "); put {% generation %} ... {% endgeneration %} around what the assistant says"));
}

ChatTemplate::Rendered ChatTemplate::render_for_training(const Value& messages, const Value& tools,
                                                         const Value& kwargs) const {
  check_trainable();
  Rendered rendered;
  std::vector<jinja::GenerationSpan> blocks;
  rendered.text = render(messages, tools, false, kwargs, &blocks);
  if (template_.has_generation_blocks()) {
    for (const auto& block : blocks)
      if (block.end > block.begin) rendered.assistant.push_back({block.begin, block.end});
    return rendered;
  }
  const jinja::List& all = messages.as_list();
  size_t search_from = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const Value* role = all[i].is_dict() ? all[i].as_dict().find(std::string_view("role")) : nullptr;
    if (!role || !role->is_string() || role->as_string() != "assistant") continue;
    if (i == 0) throw ChatError("the conversation starts with an assistant message (no prompt to condition on)");
    const std::string prompt =
        render(Value::list(jinja::List(all.begin(), all.begin() + static_cast<long>(i))), tools, true, kwargs);
    if (prompt.size() > rendered.text.size() || rendered.text.compare(0, prompt.size(), prompt) != 0 ||
        prompt.size() < search_from)
      throw ChatError(str(name(), ": the template is not prefix-preserving at messages[", i,
                          "] (messages[:", i, "] with the generation prompt is not how the whole conversation "
                          "begins); put {% generation %} ... {% endgeneration %} around what the assistant says"));
    const size_t end_at = rendered.text.find(end_of_turn_, prompt.size());
    if (end_at == std::string::npos)
      throw ChatError(str("messages[", i, "]: no ", end_of_turn_, " after the assistant's turn"));
    rendered.assistant.push_back({prompt.size(), end_at + end_of_turn_.size()});
    search_from = end_at + end_of_turn_.size();
  }
  return rendered;
}

}  // namespace moetune
