#pragma once
// The Pangu chat prompt (MOGE.md §3):
//
//   <s>[unused9]系统：{system}[unused10][unused9]用户：{user}[unused10][unused9]助手：
//
// with full-width colons "：" (U+FF1A). Each message renders as [unused9]{role}：{content}[unused10]
// in order, role 系统 (system), 用户 (user) or 助手 (assistant), so earlier assistant turns of a
// multi-turn chat read [unused9]助手：{content}[unused10]; then, for the model to answer,
// [unused9]助手： (add_generation_prompt). "<s>" comes once, first; Tokenizer::encode turns it and
// the [unusedN] strings into their single ids.
//
// No system message: MOGE.md gives no default system prompt, so by default no system block is
// written. The chat template shipped with public Pangu checkpoints writes an empty one instead,
// "<s>[unused9]系统：[unused10]", when the first message is not a system message; set
// empty_system_block to get that. A role other than system|user|assistant is a moge::Error.
#include <string>
#include <vector>

namespace moge::tokenizer {

struct Message {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatOptions {
  bool add_generation_prompt = true;  // end with [unused9]助手：
  bool empty_system_block = false;    // "<s>[unused9]系统：[unused10]" when no system message leads
};

std::string pangu_chat_prompt(const std::vector<Message>& messages, const ChatOptions& options = {});

}  // namespace moge::tokenizer
