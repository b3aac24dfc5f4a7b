/*
 * debx runtime: JSON-lines requests shared by debx_tokenize and debx_serve.
 *
 * One request per line: {"text": "...", "text_pair": "..."} (text_pair optional, null or "" for none, as in
 * transformers, where an empty text_pair is no pair). A malformed line gets
 * {"error": "..."} in its place on stdout, so a service wrapping the program keeps its line accounting.
 */
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace debx
{
namespace runtime
{

struct Request
{
    std::string text;
    std::optional<std::string> textPair;
};

//! Parse one line; throws std::invalid_argument with a one-line reason.
inline Request parseRequest(std::string const& line)
{
    nlohmann::json j;
    try
    {
        j = nlohmann::json::parse(line);
    }
    catch (nlohmann::json::parse_error const&)
    {
        throw std::invalid_argument("line is not valid JSON");
    }
    if (!j.is_object())
    {
        throw std::invalid_argument("line must be a JSON object like {\"text\": \"...\"}");
    }
    auto const text = j.find("text");
    if (text == j.end() || !text->is_string())
    {
        throw std::invalid_argument("\"text\" must be a string");
    }
    Request r;
    r.text = text->get<std::string>();
    auto const pair = j.find("text_pair");
    if (pair != j.end() && !pair->is_null())
    {
        if (!pair->is_string())
        {
            throw std::invalid_argument("\"text_pair\" must be a string or null");
        }
        r.textPair = pair->get<std::string>();
        if (r.textPair->empty())
        {
            r.textPair.reset(); // transformers treats an empty text_pair as no pair: [CLS] a [SEP]
        }
    }
    return r;
}

inline std::string errorLine(std::string const& message)
{
    return nlohmann::json{{"error", message}}.dump();
}

} // namespace runtime
} // namespace debx
