# Sourced by tests/host.rs before each README block it runs inside the test host (as root).
#
# `sudo` runs its command as is (variable assignments included, as `sudo VAR=x cmd` does; a shell
# function too, so `sudo certbot` reaches the emulation), and
# `certbot` is emulated, since no ACME server is reachable from a test: `certonly` and `renew
# --force-renewal` write a self-signed certificate for the name in certbot's layout (archive/NAMEn.pem,
# live/ symlinks to them, root-only keys), make this host trust it (so curl checks it as it would
# a real one), and `renew` runs the deploy hooks with RENEWED_LINEAGE as certbot does.

sudo() {
    local assignments=()
    while [[ $1 == *=* ]]; do
        assignments+=("$1")
        shift
    done
    if [ "$(type -t "$1")" = function ]; then
        (for a in "${assignments[@]}"; do export "${a?}"; done; "$@")
    else
        env "${assignments[@]}" "$@"
    fi
}

certbot_issue() { # NAME: the next certificate of NAME's lineage
    local name=$1 archive=/etc/letsencrypt/archive/$1 live=/etc/letsencrypt/live/$1 n
    mkdir -p "$archive" "$live" /etc/letsencrypt/renewal-hooks/deploy
    chmod 700 /etc/letsencrypt/archive /etc/letsencrypt/live
    n=$(($(find "$archive" -name 'cert*.pem' | wc -l) + 1))
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 90 \
        -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
        -keyout "$archive/privkey$n.pem" -out "$archive/cert$n.pem" 2>/dev/null
    chmod 600 "$archive/privkey$n.pem"
    cp "$archive/cert$n.pem" "$archive/chain$n.pem"
    cp "$archive/cert$n.pem" "$archive/fullchain$n.pem"
    for f in cert chain fullchain privkey; do
        ln -sfn "../../archive/$name/$f$n.pem" "$live/$f.pem"
    done
    cp "$archive/cert$n.pem" "/usr/local/share/ca-certificates/$name-$n.crt"
    update-ca-certificates >/dev/null 2>&1
    echo "certbot (emulated): issued $live/fullchain.pem"
}

certbot() {
    local name="" command=$1 live hook
    shift
    while [ $# -gt 0 ]; do
        [ "$1" = -d ] && name=$2
        shift
    done
    case $command in
    certonly) certbot_issue "$name" ;;
    renew)
        for live in /etc/letsencrypt/live/*/; do
            name=$(basename "$live")
            certbot_issue "$name"
            for hook in /etc/letsencrypt/renewal-hooks/deploy/*; do
                [ -x "$hook" ] || continue
                RENEWED_LINEAGE=/etc/letsencrypt/live/$name RENEWED_DOMAINS=$name "$hook"
            done
        done
        ;;
    *) echo "certbot (emulated): $command is not emulated" >&2; return 1 ;;
    esac
}
