/* app/rest/items.c — the catalogue over REST (API.md §5): ETag,
 * If-None-Match and Cache-Status around the service's cached item. */
#include "app/rest/rest-private.h"

#include <stdio.h>
#include <string.h>

/* Strong validator from what determines the representation: the id and
 * the version (bumped by every change), with the update time so a
 * re-created database cannot repeat a tag.  FNV-1a 64, hex. */
static void etag_of(const svc_item *it, char out[24])
{
    uint64_t h = 1469598103934665603ULL;
    int64_t parts[3] = {it->id, it->version, it->updated_us};
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 8; i++) {
            h ^= (uint8_t)((uint64_t)parts[p] >> (8 * i));
            h *= 1099511628211ULL;
        }
    static const char hex[] = "0123456789abcdef";
    out[0] = '"';
    for (int i = 0; i < 16; i++)
        out[1 + i] = hex[(h >> (60 - 4 * i)) & 15];
    out[17] = '"';
    out[18] = '\0';
}

bool rest_none_match(bz_str inm, const char *etag)
{
    size_t elen = strlen(etag);
    size_t i = 0;
    while (i < inm.n) {
        while (i < inm.n && (inm.p[i] == ' ' || inm.p[i] == '\t' || inm.p[i] == ','))
            i++;
        if (i >= inm.n)
            break;
        if (inm.p[i] == '*')
            return true;
        if (i + 2 <= inm.n && inm.p[i] == 'W' && inm.p[i + 1] == '/')
            i += 2;
        if (i >= inm.n || inm.p[i] != '"')
            return false;
        size_t j = i + 1;
        while (j < inm.n && inm.p[j] != '"')
            j++;
        if (j >= inm.n)
            return false;
        if (j + 1 - i == elen && memcmp(inm.p + i, etag, elen) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

/* A hit is served from the ETag and JSON made the last time this thread
 * answered for the same record bytes (svc.h: renditions): the record's
 * lookup and a write.  Kept as the 18-byte ETag, then the body. */
int items_get(rest_x *x)
{
    bz_str rec;
    bool hit = false;
    int rc = svc_item_get_record(x->R->s, &x->c, x->id, &rec, &hit, &x->e);
    if (hit)
        http_add_header_n(x->r, "Cache-Status", "bazaar; hit", sizeof "bazaar; hit" - 1);
    else
        http_add_header_n(x->r, "Cache-Status", "bazaar; fwd=miss", sizeof "bazaar; fwd=miss" - 1);
    if (rc != 0)
        return rest_fail(x->r, &x->e);
    bz_str kept;
    char etag[24];
    const char *body;
    size_t blen;
    if (svc_rendition_get(SVC_REND_ITEM_JSON, x->id, rec, &kept) && kept.n >= 18) {
        memcpy(etag, kept.p, 18);
        etag[18] = '\0';
        body = kept.p + 18;
        blen = kept.n - 18;
    } else {
        svc_item it;
        if (svc_item_from_record(rec, x->c.arena, &it, &x->e) != 0)
            return rest_fail(x->r, &x->e);
        etag_of(&it, etag);
        bz_buf *b = bz_arena_buf(x->c.arena);
        bz_buf_append(b, etag, 18);
        rest_json_item(b, &it);
        svc_rendition_put(SVC_REND_ITEM_JSON, x->id, rec, b->data, b->len);
        body = b->data + 18;
        blen = b->len - 18;
    }
    http_add_header_n(x->r, "ETag", etag, 18);
    bz_str inm = http_header_get(x->r, "If-None-Match");
    if (inm.p && rest_none_match(inm, etag))
        return http_send(x->r, 304, NULL, NULL, 0);
    return http_send(x->r, 200, "application/json; charset=utf-8", body, blen);
}

int items_list(rest_x *x)
{
    svc_items_query q = {rest_query_int(x->r, L_ITEMS_SELLER, &x->e), rest_query_int(x->r, L_ITEMS_OFFSET, &x->e),
                         rest_page(x->r, &x->e)};
    if (x->e.kind)
        return rest_fail(x->r, &x->e);
    svc_item_page p;
    if (svc_items_list(x->R->s, &x->c, &q, &p, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send_list(x->r, rest_json_item, p.data, sizeof *p.data, p.n, true, p.next_cursor);
}

static void read_item(json_t *j, bool reals, bool full, svc_item_in *in, svc_err *e)
{
    in->sku = rest_get_str(j, full ? L_ITEM_SKU : L_IPATCH_SKU, e);
    in->name = rest_get_str(j, full ? L_ITEM_NAME : L_IPATCH_NAME, e);
    in->price_cents = rest_get_int(j, full ? L_ITEM_PRICE : L_IPATCH_PRICE, reals, NULL, e);
    in->currency = rest_get_str(j, full ? L_ITEM_CURRENCY : L_IPATCH_CURRENCY, e);
    in->stock = rest_get_int(j, full ? L_ITEM_STOCK : L_IPATCH_STOCK, reals, NULL, e);
}

/* POST (create), PUT (full) and PATCH: one body reader, one answer. */
static int write_item(rest_x *x, bool create, bool full)
{
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_item_in in;
    read_item(j, reals, full, &in, &x->e);
    svc_item it;
    int rc = create ? svc_item_create(x->R->s, &x->c, &in, &it, &x->e)
                    : svc_item_update(x->R->s, &x->c, x->id, &in, full, &it, &x->e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, create ? 201 : 200, rest_json_item, &it, create ? "/v1/items/" : NULL, it.id);
}

int items_create(rest_x *x) { return write_item(x, true, true); }
int items_put(rest_x *x) { return write_item(x, false, true); }
int items_patch(rest_x *x) { return write_item(x, false, false); }

int items_delete(rest_x *x)
{
    if (svc_item_delete(x->R->s, &x->c, x->id, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return http_send(x->r, 204, NULL, NULL, 0);
}
