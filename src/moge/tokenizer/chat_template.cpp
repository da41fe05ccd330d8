#include "moge/tokenizer/chat_template.h"

#include "moge/core/error.h"

namespace moge::tokenizer {

std::string pangu_chat_prompt(const std::vector<Message>& messages, const ChatOptions& options) {
  static const std::string kBegin = "[unused9]", kEnd = "[unused10]";
  std::string out = "<s>";
  if (options.empty_system_block && (messages.empty() || messages.front().role != "system"))
    out += kBegin + "系统：" + kEnd;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    const char* name = m.role == "system" ? "系统：" : m.role == "user" ? "用户：" : m.role == "assistant" ? "助手：" : nullptr;
    check(name != nullptr, "chat message " + std::to_string(i) + ": role \"" + m.role +
                               "\" is not one of system, user, assistant");
    out += kBegin + name + m.content + kEnd;
  }
  if (options.add_generation_prompt) out += kBegin + "助手：";
  return out;
}

}  // namespace moge::tokenizer
