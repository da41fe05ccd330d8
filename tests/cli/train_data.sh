# Sourced by the training tests: make_train_data MOGE DIR writes a small corpus, a 320-token
# tokenizer (DIR/tok) and its shards (DIR/data).
make_train_data() {
  local moge=$1 dir=$2
  for i in $(seq 1 60); do
    echo "Address $i. Fellow citizens of the Senate and House of Representatives, the state of the union is strong."
    echo "In year $((1790 + i)) the people of our great nation shall trade in peace and keep the public credit."
    echo
  done > "$dir/text.txt"
  "$moge" tokenizer train --input "$dir/text.txt" --vocab-size 320 --out "$dir/tok" --seed 1 > /dev/null 2>&1
  "$moge" data --tokenizer "$dir/tok" --input "$dir/text.txt" --out "$dir/data" --val-fraction 0.1 --seed 3 \
    > /dev/null 2>&1
}
