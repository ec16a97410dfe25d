/* Intrusive doubly linked lists: an item struct carries LIST_FIELDS(type, name), the head is a plain
 * pointer to the first item (NULL when empty). Prepend and remove are O(1), so an object can leave
 * its list from anywhere (a cancelled request, a closed connection) without a search. */
#pragma once

#define LIST_FIELDS(type, name) type *name##_next, *name##_prev

#define LIST_PREPEND(name, head, item)                                                  \
        __extension__({                                                                 \
                __typeof__(*(head)) **_head = &(head), *_item = (item);                 \
                _item->name##_prev = NULL;                                              \
                _item->name##_next = *_head;                                            \
                if (*_head)                                                             \
                        (*_head)->name##_prev = _item;                                  \
                *_head = _item;                                                         \
                _item;                                                                  \
        })

#define LIST_REMOVE(name, head, item)                                                   \
        __extension__({                                                                 \
                __typeof__(*(head)) **_head = &(head), *_item = (item);                 \
                if (_item->name##_next)                                                 \
                        _item->name##_next->name##_prev = _item->name##_prev;           \
                if (_item->name##_prev)                                                 \
                        _item->name##_prev->name##_next = _item->name##_next;           \
                else                                                                    \
                        *_head = _item->name##_next;                                    \
                _item->name##_next = _item->name##_prev = NULL;                         \
                _item;                                                                  \
        })

#define LIST_FOREACH(name, i, head) for (__typeof__(head) i = (head); i; i = i->name##_next)
