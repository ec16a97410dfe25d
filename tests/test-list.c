/* Tests for the intrusive lists of src/libkegbot/list.h: prepend, remove from the head, the middle
 * and the tail, iteration order, and an item's links cleared once it is out. */
#include "test-util.h"

#include "list.h"

typedef struct Item Item;
struct Item {
        int id;
        LIST_FIELDS(Item, items);
};

static void order(Item *head, const char *expected) {
        char got[32] = "";
        size_t n = 0;

        LIST_FOREACH(items, i, head) {
                got[n++] = (char) ('0' + i->id);
                if (i->items_next)
                        check(i->items_next->items_prev == i);
        }
        got[n] = 0;
        check_streq(got, expected);
}

static void test_list(void) {
        Item it[5] = { { .id = 0 }, { .id = 1 }, { .id = 2 }, { .id = 3 }, { .id = 4 } };
        Item *head = NULL;

        order(head, "");
        for (size_t i = 0; i < ELEMENTSOF(it); i++)
                check(LIST_PREPEND(items, head, &it[i]) == &it[i]);
        order(head, "43210");
        check(head->items_prev == NULL);

        check(LIST_REMOVE(items, head, &it[2]) == &it[2]);        /* middle */
        order(head, "4310");
        check(it[2].items_next == NULL && it[2].items_prev == NULL);
        LIST_REMOVE(items, head, &it[4]);                          /* head */
        order(head, "310");
        check(head == &it[3] && head->items_prev == NULL);
        LIST_REMOVE(items, head, &it[0]);                          /* tail */
        order(head, "31");
        LIST_REMOVE(items, head, &it[3]);
        LIST_REMOVE(items, head, &it[1]);
        check(head == NULL);
        order(head, "");

        LIST_PREPEND(items, head, &it[2]);
        order(head, "2");
}

int main(void) {
        test_run(test_list);
        return test_result();
}
