// tokenize_tsv SPM_MODEL|CHECKPOINT_DIR FILE.tsv [COLUMN] [MAX_LENGTH]: the token ids of one column of a GLUE TSV file
// (header line skipped), one line per row, space-separated: the smallest program that links the installed
// debx::tokenizer. The normalization (transformers 4 or 5) is the checkpoint's; stderr says which and why.
#include <debx/tokenizer.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::cerr << "usage: tokenize_tsv SPM_MODEL|CHECKPOINT_DIR FILE.tsv [COLUMN] [MAX_LENGTH]\n";
        return 2;
    }
    int const column = argc > 3 ? std::atoi(argv[3]) : 0;
    int const maxLength = argc > 4 ? std::atoi(argv[4]) : 512;
    try
    {
        debx::runtime::DebertaTokenizer tokenizer(argv[1]);
        std::cerr << "tokenize_tsv: normalization " << debx::runtime::normalizationName(tokenizer.normalization())
                  << " (" << tokenizer.normalizationReason() << ")\n";
        std::ifstream in(argv[2]);
        if (!in)
        {
            std::cerr << "tokenize_tsv: cannot read " << argv[2] << "\n";
            return 2;
        }
        std::string line;
        std::getline(in, line); // header
        while (std::getline(in, line))
        {
            if (line.empty())
                continue;
            size_t start = 0;
            for (int c = 0; c < column; ++c)
                start = line.find('\t', start) + 1;
            std::string const text = line.substr(start, line.find('\t', start) - start);
            debx::runtime::Encoding const e = tokenizer.encode(text, nullptr, maxLength);
            for (size_t i = 0; i < e.inputIds.size(); ++i)
                std::cout << (i ? " " : "") << e.inputIds[i];
            std::cout << "\n";
        }
    }
    catch (std::exception const& e)
    {
        std::cerr << "tokenize_tsv: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
