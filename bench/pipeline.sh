#!/bin/sh
# The shell pipeline exportmon replaces, as the end-to-end benchmark runs it: for each
# export link (one per line in LINKS), download it with curl (verifying TLS against
# CA_FILE), unzip a zip, rewrite every CSV file with csvkit's csvformat to | : ##\n and
# upload it with curl -T to FTP_URL (credentials from the netrc file NETRC, so that no
# password is on a command line). WORK_DIR holds the files in between.
#
# usage: pipeline.sh LINKS CA_FILE FTP_URL NETRC WORK_DIR CSVFORMAT
set -eu
links=$1 ca_file=$2 ftp_url=$3 netrc=$4 work=$5 csvformat=$6
row_sep=$(printf '##\nx')
row_sep=${row_sep%x}

while read -r link; do
    name=${link##*/}
    folder="$work/$name.d"
    mkdir -p "$folder/in" "$folder/out"
    curl -sS --fail --cacert "$ca_file" -o "$folder/$name" "$link"
    case $name in
        *.zip) unzip -o -q "$folder/$name" -d "$folder/in" ;;
        *) mv "$folder/$name" "$folder/in/$name" ;;
    esac
    for csv in "$folder/in"/*.csv; do
        out="$folder/out/${csv##*/}"
        "$csvformat" -D '|' -Q ':' -M "$row_sep" "$csv" >"$out"
        curl -sS --fail --netrc-file "$netrc" --ftp-create-dirs -T "$out" "$ftp_url/"
    done
    rm -rf "$folder"
done <"$links"
